// Development: smallest tiers, local-only backups. Secrets are read from the
// deploying shell (CI secret store), never written here.
using '../main.bicep'

param environment = 'dev'
param aggregatorImage = 'convergio.azurecr.io/convergio-gateway:dev'
param registryServer = 'convergio.azurecr.io'
param aggregatorMinReplicas = 1
param aggregatorMaxReplicas = 2

param postgresSkuName = 'Standard_B1ms'
param postgresSkuTier = 'Burstable'
param postgresBackupRetentionDays = 7
param postgresGeoRedundantBackup = false
param postgresHighAvailability = false
param postgresAdminPassword = readEnvironmentVariable('CVG_POSTGRES_ADMIN_PASSWORD')

param redisSkuName = 'Basic'
param redisCapacity = 0

param meteringSecret = readEnvironmentVariable('CVG_METERING_SECRET')
param jwtSecret = readEnvironmentVariable('CVG_JWT_SECRET')
param byokMasterKeys = readEnvironmentVariable('CVG_BYOK_MASTER_KEYS')
param redisRestToken = readEnvironmentVariable('CVG_REDIS_REST_TOKEN')
param secretsRotatedOn = '2026-11-01'
param logRetentionDays = 30
