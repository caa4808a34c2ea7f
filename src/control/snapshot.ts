import { z } from "zod";
import { DeploymentSchema, PlanOverrideSchema, PriceSchema } from "../config.ts";
import { EnvelopeSchema } from "../keys/envelope.ts";
import { FlagNameSchema, FlagStateSchema, PermissionSchema } from "./flags.ts";
import { MitigationNameSchema, MitigationStateSchema } from "./mitigations.ts";

export const TenantTypeSchema = z.enum(["consumer", "school", "business"]);

const tenantFields = {
  type: TenantTypeSchema,
  plan: z.string().min(1).nullable(),
  limits: PlanOverrideSchema,
  downgrade_model: z.string().min(1).nullable(),
  /** Usage-event retention of a business tenant, in months. */
  retention_months: z.number().int().min(24).max(84).nullable(),
  /** Tool names the tenant may use; null: no allow-list. */
  tools: z.array(z.string().min(1)).nullable(),
};

/** A tenant as the admin API manages it; config's byok keys stay in config. */
export const TenantSettingsSchema = z.strictObject({
  type: tenantFields.type.default("consumer"),
  plan: tenantFields.plan.default(null),
  limits: tenantFields.limits.default({}),
  downgrade_model: tenantFields.downgrade_model.default(null),
  retention_months: tenantFields.retention_months.default(null),
  tools: tenantFields.tools.default(null),
});
/** A change to a tenant: only the fields it names (no defaults, so nothing else is reset). */
export const TenantPatchSchema = z.strictObject(tenantFields).partial();
export type TenantSettings = z.infer<typeof TenantSettingsSchema>;

export const ModelOverrideSchema = z.strictObject({
  price: PriceSchema.nullable().default(null),
  deployments: z.array(DeploymentSchema).min(1).nullable().default(null),
});
export type ModelOverride = z.infer<typeof ModelOverrideSchema>;

export const PluginSchema = z.strictObject({
  name: z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,63}$/, "a plugin name is lowercase [a-z0-9_.-]"),
  version: z.string().min(1).max(64),
  description: z.string().max(1000).default(""),
  /** Tool (function) names the plugin provides. */
  tools: z.array(z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, "a tool name is [a-zA-Z0-9_-]{1,64}"))
    .min(1),
  permissions: z.array(PermissionSchema).default([]),
});
export type PluginManifest = z.infer<typeof PluginSchema>;

/**
 * Everything an edge needs from the control plane, in one document: edges
 * poll it with its version as ETag and keep the last good copy.
 */
export const ControlSnapshotSchema = z.strictObject({
  version: z.string(),
  flags: z.partialRecord(FlagNameSchema, FlagStateSchema),
  mitigations: z.partialRecord(MitigationNameSchema, MitigationStateSchema),
  tenants: z.record(
    z.string(),
    TenantSettingsSchema.extend({ created_at: z.string() }),
  ),
  plans: z.record(z.string(), PlanOverrideSchema),
  models: z.record(z.string(), ModelOverrideSchema),
  budget_overrides: z.array(z.strictObject({
    tenant_id: z.string(),
    reason: z.string(),
    by: z.string(),
    expires_at: z.number(),
  })),
  /** Tenants' own provider keys, by reference; an edge loads each through its key store. */
  byok: z.array(z.strictObject({
    tenant_id: z.string(),
    provider: z.string(),
    key_ref: z.string(),
    envelope: EnvelopeSchema.nullable(),
    /** Changes with every new key, so edges reload a vault secret whose reference stays. */
    updated_at: z.string(),
  })),
  plugins: z.array(PluginSchema.extend({
    status: z.enum(["pending_approval", "approved"]),
  })),
});
export type ControlSnapshot = z.infer<typeof ControlSnapshotSchema>;

/** The snapshot of a control plane with nothing in it: config alone decides. */
export function emptySnapshot(): ControlSnapshot {
  return {
    version: "empty",
    flags: {},
    mitigations: {},
    tenants: {},
    plans: {},
    models: {},
    budget_overrides: [],
    byok: [],
    plugins: [],
  };
}
