// Convergio on Azure (docs/deploy.md): the aggregator on Container Apps with
// its Postgres ledger, Azure Cache for Redis behind an Upstash-REST bridge,
// Key Vault and monitoring. One parameter file per environment (env/*.bicepparam).
//   az bicep build --file infra/azure/main.bicep
//   az deployment group create -g <group> -f infra/azure/main.bicep -p infra/azure/env/prod.bicepparam
targetScope = 'resourceGroup'

@allowed([
  'dev'
  'prod'
])
param environment string
param location string = resourceGroup().location
@minLength(2)
@maxLength(10)
param prefix string = 'cvg'
param tags object = {}

@description('Gateway image (infra/selfhost/Containerfile), e.g. <registry>/convergio-gateway:<version>.')
param aggregatorImage string
@description('Registry of the images; the app identity needs AcrPull on it. Empty = public images.')
param registryServer string = ''
@minValue(1)
param aggregatorMinReplicas int = 1
@minValue(1)
param aggregatorMaxReplicas int = 3
@description('Canary: the revision kept stable; empty = all traffic to the latest revision.')
param aggregatorStableRevision string = ''
@minValue(0)
@maxValue(100)
param aggregatorCanaryPercent int = 0
param redisRestImage string = 'docker.io/hiett/serverless-redis-http:latest'

param postgresSkuName string
param postgresSkuTier string
param postgresStorageGb int = 32
@description('Point-in-time restore window; 7 days covers the 24 h RPO, more covers late-found corruption.')
param postgresBackupRetentionDays int
param postgresGeoRedundantBackup bool
param postgresHighAvailability bool
param postgresAdminLogin string = 'convergio'
@secure()
param postgresAdminPassword string

param redisSkuName string
param redisCapacity int

@secure()
param meteringSecret string
@secure()
param jwtSecret string
@description('BYOK master keys (v1:<base64url>,...): every edge with the local BYOK store needs the same.')
@secure()
param byokMasterKeys string
@description('Bearer token of the Redis REST bridge; the REDIS_REST_TOKEN of edges that use it.')
@secure()
param redisRestToken string
@description('Day (yyyy-MM-dd) the secrets above were last rotated.')
param secretsRotatedOn string
param secretRotationDays int = 90
@secure()
param rotationWebhookUrl string = ''

param logRetentionDays int = 30

var namePrefix = '${prefix}-${environment}'
// Known before deployment: the key is read from the cache by this name.
var redisName = '${namePrefix}-redis'
var allTags = union(tags, {
  app: 'convergio-gateway'
  environment: environment
})

// The apps' identity exists before them, so Key Vault access is granted first.
resource appIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-apps-id'
  location: location
  tags: allTags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    namePrefix: namePrefix
    retentionDays: logRetentionDays
    tags: allTags
  }
}

module postgres 'modules/postgres.bicep' = {
  name: 'postgres'
  params: {
    location: location
    namePrefix: namePrefix
    tags: allTags
    skuName: postgresSkuName
    skuTier: postgresSkuTier
    storageGb: postgresStorageGb
    backupRetentionDays: postgresBackupRetentionDays
    geoRedundantBackup: postgresGeoRedundantBackup
    highAvailability: postgresHighAvailability
    adminLogin: postgresAdminLogin
    adminPassword: postgresAdminPassword
    workspaceId: monitoring.outputs.workspaceId
  }
}

module redis 'modules/redis.bicep' = {
  name: 'redis'
  params: {
    location: location
    name: redisName
    tags: allTags
    skuName: redisSkuName
    capacity: redisCapacity
  }
}

resource redisCache 'Microsoft.Cache/redis@2024-03-01' existing = {
  name: redisName
}

module vault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  dependsOn: [
    redis
    monitoring
  ]
  params: {
    location: location
    namePrefix: namePrefix
    tags: allTags
    readerPrincipalId: appIdentity.properties.principalId
    workspaceId: monitoring.outputs.workspaceId
    rotatedOn: secretsRotatedOn
    rotationDays: secretRotationDays
    rotationWebhookUrl: rotationWebhookUrl
    secretValues: {
      'database-url': 'postgres://${postgresAdminLogin}:${uriComponent(postgresAdminPassword)}@${postgres.outputs.fqdn}:5432/${postgres.outputs.databaseName}?sslmode=require'
      'metering-secret': meteringSecret
      'jwt-secret': jwtSecret
      'byok-master-keys': byokMasterKeys
      'redis-rest-token': redisRestToken
      'redis-connection-string': 'rediss://:${redisCache.listKeys().primaryKey}@${redis.outputs.hostName}:${redis.outputs.sslPort}'
    }
  }
}

module apps 'modules/containerapps.bicep' = {
  name: 'containerapps'
  dependsOn: [
    vault
  ]
  params: {
    location: location
    namePrefix: namePrefix
    tags: allTags
    workspaceName: monitoring.outputs.workspaceName
    insightsConnectionString: monitoring.outputs.insightsConnectionString
    identityId: appIdentity.id
    secretUris: {
      'database-url': '${vault.outputs.vaultUri}secrets/database-url'
      'metering-secret': '${vault.outputs.vaultUri}secrets/metering-secret'
      'jwt-secret': '${vault.outputs.vaultUri}secrets/jwt-secret'
      'byok-master-keys': '${vault.outputs.vaultUri}secrets/byok-master-keys'
      'redis-rest-token': '${vault.outputs.vaultUri}secrets/redis-rest-token'
      'redis-connection-string': '${vault.outputs.vaultUri}secrets/redis-connection-string'
    }
    aggregatorImage: aggregatorImage
    registryServer: registryServer
    minReplicas: aggregatorMinReplicas
    maxReplicas: aggregatorMaxReplicas
    stableRevision: aggregatorStableRevision
    canaryPercent: aggregatorCanaryPercent
    redisRestImage: redisRestImage
  }
}

@description('AGGREGATOR_URL of the edges (infra/deploy/deploy.env.json).')
output aggregatorUrl string = apps.outputs.aggregatorUrl
output redisRestUrl string = apps.outputs.redisRestUrl
output keyVaultName string = vault.outputs.vaultName
output appIdentityClientId string = appIdentity.properties.clientId
