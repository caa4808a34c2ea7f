// Key Vault for the gateway's secrets: RBAC (the app identity may only read
// secrets), purge protection, audit logs to Log Analytics, and a rotation
// policy. Key Vault's automatic rotation covers keys, not secrets, so each
// secret carries an expiry (rotatedOn + rotationDays) and Event Grid reports
// SecretNearExpiry / SecretExpired to the on-call webhook.
param location string
param namePrefix string
param tags object
@description('Principal (object) id of the identity the container apps run as.')
param readerPrincipalId string
param workspaceId string
@description('Secret name → value. Values come from the deploying pipeline, never from a file.')
@secure()
param secretValues object
@description('Day (yyyy-MM-dd) the secrets were last rotated; bump it when rotating.')
param rotatedOn string
@minValue(1)
@maxValue(365)
param rotationDays int
@description('Receives near-expiry events; empty = no subscription.')
@secure()
param rotationWebhookUrl string

// Built-in role "Key Vault Secrets User": read secret values, nothing else.
var secretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6'
var expiresAt = dateTimeToEpoch(dateTimeAdd('${rotatedOn}T00:00:00Z', 'P${rotationDays}D'))

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: '${namePrefix}-kv'
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, readerPrincipalId, secretsUserRoleId)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsUserRoleId)
    principalId: readerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource secrets 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [
  for secret in items(secretValues): {
    parent: vault
    name: secret.key
    properties: {
      value: secret.value
      attributes: {
        enabled: true
        exp: expiresAt
      }
    }
  }
]

resource audit 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

resource events 'Microsoft.EventGrid/systemTopics@2022-06-15' = if (!empty(rotationWebhookUrl)) {
  name: '${namePrefix}-kv-events'
  location: location
  tags: tags
  properties: {
    source: vault.id
    topicType: 'Microsoft.KeyVault.vaults'
  }
}

resource nearExpiry 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = if (!empty(rotationWebhookUrl)) {
  parent: events
  name: 'secret-rotation-due'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: rotationWebhookUrl
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.KeyVault.SecretNearExpiry'
        'Microsoft.KeyVault.SecretExpired'
      ]
    }
  }
}

output vaultName string = vault.name
output vaultUri string = vault.properties.vaultUri
