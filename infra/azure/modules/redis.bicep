// Azure Cache for Redis for limits and budgets: a cache only. Basic and
// Standard have no RDB/AOF persistence (Premium only), which is what the
// gateway wants: Postgres is the truth and reconciles lost counters.
param location string
param name string
param tags object
@allowed([
  'Basic'
  'Standard'
])
param skuName string
@minValue(0)
@maxValue(6)
param capacity int

resource redis 'Microsoft.Cache/redis@2024-03-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    sku: {
      name: skuName
      family: 'C'
      capacity: capacity
    }
    enableNonSslPort: false
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
    redisConfiguration: {
      // Every key the gateway writes has a TTL (infra/redis/README.md).
      'maxmemory-policy': 'volatile-ttl'
    }
  }
}

output hostName string = redis.properties.hostName
output sslPort int = redis.properties.sslPort
