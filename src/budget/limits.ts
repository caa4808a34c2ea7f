import { own } from "../record.ts";
import type { Config, PlanLimits } from "../config.ts";

/** A tenant's limits: the defaults, then its plan, then its own overrides. */
export function tenantLimits(config: Config, tenantId: string): PlanLimits {
  const tenant = own(config.tenants, tenantId);
  const plan = tenant?.plan ? config.plans[tenant.plan] : {};
  return { ...config.tenant_defaults, ...plan, ...tenant?.limits };
}

/** The cheaper alias a tenant is downgraded to at 90%, if any. */
export function downgradeModel(config: Config, tenantId: string): string | undefined {
  return own(config.tenants, tenantId)?.downgrade_model ?? config.guardrails.downgrade_model;
}
