// Production: zone-redundant HA Postgres with 35 days of point-in-time
// restore and geo-redundant backups (RPO/RTO 24 h, ops spec section 5).
// Secrets are read from the deploying shell (CI secret store), never written here.
using '../main.bicep'

param environment = 'prod'
param aggregatorImage = 'convergio.azurecr.io/convergio-gateway:0.1.0'
param registryServer = 'convergio.azurecr.io'
param aggregatorMinReplicas = 2
param aggregatorMaxReplicas = 6
// Canary: name the current revision here and set a percentage for the new one.
param aggregatorStableRevision = ''
param aggregatorCanaryPercent = 0

param postgresSkuName = 'Standard_D2ds_v5'
param postgresSkuTier = 'GeneralPurpose'
param postgresStorageGb = 128
param postgresBackupRetentionDays = 35
param postgresGeoRedundantBackup = true
param postgresHighAvailability = true
param postgresAdminPassword = readEnvironmentVariable('CVG_POSTGRES_ADMIN_PASSWORD')

param redisSkuName = 'Standard'
param redisCapacity = 1

param meteringSecret = readEnvironmentVariable('CVG_METERING_SECRET')
param jwtSecret = readEnvironmentVariable('CVG_JWT_SECRET')
param byokMasterKeys = readEnvironmentVariable('CVG_BYOK_MASTER_KEYS')
param redisRestToken = readEnvironmentVariable('CVG_REDIS_REST_TOKEN')
param secretsRotatedOn = '2026-11-01'
param secretRotationDays = 90
param rotationWebhookUrl = readEnvironmentVariable('CVG_ROTATION_WEBHOOK_URL', '')
param logRetentionDays = 90
