// The Container Apps environment (logs to Log Analytics, OpenTelemetry traces
// and logs to Application Insights), the aggregator, and the Upstash-REST
// bridge (serverless-redis-http) that lets self-hosted edges in this
// environment use Azure Cache for Redis.
param location string
param namePrefix string
param tags object
param workspaceName string
@secure()
param insightsConnectionString string
@description('Resource id of the user-assigned identity the apps run as.')
param identityId string
@description('Key Vault secret URIs (without version) by container-app secret name.')
param secretUris object
param aggregatorImage string
@description('Registry the images come from; the identity needs AcrPull there. Empty = public images.')
param registryServer string
@minValue(1)
param minReplicas int
@minValue(1)
param maxReplicas int
@description('Revision kept as stable during a canary; empty = all traffic to the latest revision.')
param stableRevision string
@minValue(0)
@maxValue(100)
param canaryPercent int
param redisRestImage string

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource environment 'Microsoft.App/managedEnvironments@2024-10-02-preview' = {
  name: '${namePrefix}-apps'
  location: location
  tags: tags
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: workspace.properties.customerId
        sharedKey: workspace.listKeys().primarySharedKey
      }
    }
    appInsightsConfiguration: {
      connectionString: insightsConnectionString
    }
    // The managed OpenTelemetry agent: apps export OTLP to the endpoint it
    // injects (OTEL_EXPORTER_OTLP_ENDPOINT) and it forwards to App Insights.
    openTelemetryConfiguration: {
      tracesConfiguration: {
        destinations: [
          'appInsights'
        ]
      }
      logsConfiguration: {
        destinations: [
          'appInsights'
        ]
      }
    }
  }
}

var identity = {
  type: 'UserAssigned'
  userAssignedIdentities: {
    '${identityId}': {}
  }
}
var registries = empty(registryServer) ? [] : [
  {
    server: registryServer
    identity: identityId
  }
]
var keyVaultSecrets = [
  for s in items(secretUris): {
    name: s.key
    keyVaultUrl: s.value
    identity: identityId
  }
]
// Canary (ops spec section 4): with a stable revision named, the latest
// revision gets canaryPercent of the traffic and the stable one the rest.
var traffic = empty(stableRevision) ? [
  {
    latestRevision: true
    weight: 100
  }
] : [
  {
    revisionName: stableRevision
    weight: 100 - canaryPercent
  }
  {
    latestRevision: true
    weight: canaryPercent
  }
]
var probes = [
  {
    type: 'Liveness'
    httpGet: {
      path: '/healthz'
      port: 8080
    }
    periodSeconds: 10
  }
  {
    type: 'Readiness'
    httpGet: {
      path: '/healthz'
      port: 8080
    }
    initialDelaySeconds: 3
    periodSeconds: 5
  }
]

resource aggregator 'Microsoft.App/containerApps@2024-03-01' = {
  name: '${namePrefix}-aggregator'
  location: location
  tags: tags
  identity: identity
  properties: {
    managedEnvironmentId: environment.id
    configuration: {
      activeRevisionsMode: 'Multiple'
      ingress: {
        external: true
        targetPort: 8080
        transport: 'auto'
        allowInsecure: false
        traffic: traffic
      }
      secrets: filter(keyVaultSecrets, s => s.name != 'redis-rest-token' && s.name != 'redis-connection-string')
      registries: registries
    }
    template: {
      // Longer than metering.shutdown_flush_ms (10 s): SIGTERM drains first.
      terminationGracePeriodSeconds: 45
      containers: [
        {
          name: 'aggregator'
          image: aggregatorImage
          resources: {
            cpu: json('0.5')
            memory: '1Gi'
          }
          env: [
            {
              name: 'ROLE'
              value: 'aggregator'
            }
            {
              name: 'HOST'
              value: '0.0.0.0'
            }
            {
              name: 'PORT'
              value: '8080'
            }
            {
              name: 'DATABASE_URL'
              secretRef: 'database-url'
            }
            {
              name: 'METERING_SECRET'
              secretRef: 'metering-secret'
            }
            {
              name: 'JWT_SECRET'
              secretRef: 'jwt-secret'
            }
            {
              name: 'BYOK_MASTER_KEYS'
              secretRef: 'byok-master-keys'
            }
            {
              name: 'OTEL_DENO'
              value: 'true'
            }
            // Head sampling: one root trace in ten, an inbound sampled traceparent always
            // continued. Every trace costs a large share of per-request CPU (docs/benchmarks.md).
            {
              name: 'OTEL_TRACES_SAMPLER'
              value: 'parentbased_traceidratio'
            }
            {
              name: 'OTEL_TRACES_SAMPLER_ARG'
              value: '0.1'
            }
            {
              name: 'OTEL_SERVICE_NAME'
              value: 'convergio-aggregator'
            }
          ]
          probes: probes
        }
      ]
      scale: {
        minReplicas: minReplicas
        maxReplicas: maxReplicas
        rules: [
          {
            name: 'http'
            http: {
              metadata: {
                concurrentRequests: '100'
              }
            }
          }
        ]
      }
    }
  }
}

// Reachable only inside the environment, at http://<name>; edges there set
// REDIS_REST_URL to it and REDIS_REST_TOKEN to the redis-rest-token secret.
resource redisRest 'Microsoft.App/containerApps@2024-03-01' = {
  name: '${namePrefix}-redis-rest'
  location: location
  tags: tags
  identity: identity
  properties: {
    managedEnvironmentId: environment.id
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: {
        external: false
        targetPort: 80
        transport: 'http'
      }
      secrets: filter(keyVaultSecrets, s => s.name == 'redis-rest-token' || s.name == 'redis-connection-string')
    }
    template: {
      containers: [
        {
          name: 'srh'
          image: redisRestImage
          resources: {
            cpu: json('0.25')
            memory: '0.5Gi'
          }
          env: [
            {
              name: 'SRH_MODE'
              value: 'env'
            }
            {
              name: 'SRH_TOKEN'
              secretRef: 'redis-rest-token'
            }
            {
              name: 'SRH_CONNECTION_STRING'
              secretRef: 'redis-connection-string'
            }
          ]
        }
      ]
      scale: {
        minReplicas: 1
        maxReplicas: 3
      }
    }
  }
}

output aggregatorUrl string = 'https://${aggregator.properties.configuration.ingress.fqdn}'
output redisRestUrl string = 'http://${redisRest.name}'
