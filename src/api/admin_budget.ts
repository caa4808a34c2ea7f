import { Hono } from "hono";
import { z } from "zod";
import { requireRole } from "../auth/roles.ts";
import type { BudgetStore } from "../budget/store.ts";
import type { Clock } from "../clock.ts";
import type { Config } from "../config.ts";
import { GatewayError } from "../errors.ts";
import type { Logger } from "../obs/log.ts";
import { parseBody } from "./body.ts";
import type { AppEnv } from "./context.ts";

export interface AdminBudgetDeps {
  config: Config;
  store: BudgetStore;
  clock: Clock;
  log: Logger;
}

/**
 * Budget overrides: a platform admin lifts the 110% block for one tenant, for
 * a limited time and with a reason. Kept in the budget store, so every edge
 * sees it at once.
 */
export function adminBudgetRoutes(deps: AdminBudgetDeps) {
  const { config, store, clock, log } = deps;
  const OverrideSchema = z.strictObject({
    reason: z.string().trim().min(3).max(500),
    ttl_s: z.number().int().positive().max(config.guardrails.override_max_ttl_s),
  });
  const app = new Hono<AppEnv>();
  app.use("/tenants/:tenant/budget-override", requireRole("admin"));

  app.put("/tenants/:tenant/budget-override", async (c) => {
    const { reason, ttl_s } = await parseBody(c, OverrideSchema);
    const override = {
      tenant_id: c.req.param("tenant"),
      reason,
      by: c.var.principal.user_id,
      expires_at: clock.now() + ttl_s * 1000,
    };
    await store.setOverride(override);
    log.warn("budget override set", { ...override, request_id: c.var.requestId });
    return c.json({ override, request_id: c.var.requestId });
  });

  app.get("/tenants/:tenant/budget-override", async (c) => {
    const override = await store.getOverride(c.req.param("tenant"));
    if (!override) {
      throw new GatewayError("request.invalid", "no active budget override for this tenant", {
        status: 404,
      });
    }
    return c.json({ override, request_id: c.var.requestId });
  });

  app.delete("/tenants/:tenant/budget-override", async (c) => {
    const tenant = c.req.param("tenant");
    await store.clearOverride(tenant);
    log.warn("budget override cleared", {
      tenant_id: tenant,
      by: c.var.principal.user_id,
      request_id: c.var.requestId,
    });
    return c.json({ cleared: true, request_id: c.var.requestId });
  });

  return app;
}
