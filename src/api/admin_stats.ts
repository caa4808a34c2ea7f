import { Hono } from "hono";
import { z } from "zod";
import { requireRole } from "../auth/roles.ts";
import { budgetAction, THRESHOLDS } from "../budget/store.ts";
import { tenantLimits } from "../budget/limits.ts";
import type { Clock } from "../clock.ts";
import type { Config } from "../config.ts";
import type { DbHealth } from "../control/db_health.ts";
import type { ControlStore } from "../control/store.ts";
import { overlaid } from "../control/view.ts";
import type { Sql } from "../db/client.ts";
import { parseQuery } from "./body.ts";
import { errorsByCode, latencySeries, spendSeries } from "../metering/stats.ts";
import { monthSpendByTenant } from "../metering/ledger.ts";
import type { AppEnv } from "./context.ts";

export interface AdminStatsDeps {
  sql: Sql;
  config: Config;
  clock: Clock;
  control: ControlStore;
  health: DbHealth;
}

const Query = z.strictObject({
  hours: z.coerce.number().int().min(1).max(24 * 31).default(24),
  bucket: z.enum(["minute", "hour"]).optional(),
  days: z.coerce.number().int().min(1).max(92).default(30),
});

/**
 * Fleet-wide figures for the console and operators, all from the ledger, so
 * they cover every edge: latency percentiles over time, errors by code, spend
 * per tenant and model per day, and tenants near their budget thresholds.
 */
export function adminStatsRoutes(deps: AdminStatsDeps) {
  const { sql, config, clock, health } = deps;
  const app = new Hono<AppEnv>();
  app.use("/stats/*", requireRole("admin"));

  const since = (hours: number) => new Date(clock.now() - hours * 3_600_000);
  const today = () => new Date(clock.now()).toISOString().slice(0, 10);

  app.get("/stats/latency", async (c) => {
    const q = parseQuery(c, Query);
    const bucket = q.bucket ?? (q.hours <= 6 ? "minute" : "hour");
    const series = await health.run("stats", () => latencySeries(sql, since(q.hours), bucket));
    return c.json({ bucket, series, request_id: c.var.requestId });
  });

  app.get("/stats/errors", async (c) => {
    const q = parseQuery(c, Query);
    const errors = await health.run("stats", () => errorsByCode(sql, since(q.hours)));
    return c.json({ hours: q.hours, errors, request_id: c.var.requestId });
  });

  app.get("/stats/spend", async (c) => {
    const q = parseQuery(c, Query);
    const from = new Date(clock.now() - (q.days - 1) * 86_400_000).toISOString().slice(0, 10);
    const spend = await health.run("stats", () => spendSeries(sql, from));
    return c.json({
      from,
      ...spend,
      global_daily_cap_usd: config.guardrails.global_daily_cap_usd,
      request_id: c.var.requestId,
    });
  });

  /** Managed spend against each tenant's budgets, with the admin API's plans and limits applied. */
  app.get("/stats/budgets", async (c) => {
    const day = today();
    const effective = overlaid(config, await deps.control.snapshot());
    const rows = await health.run("stats", () => monthSpendByTenant(sql, day));
    const tenants = rows.map((r) => {
      const limits = tenantLimits(effective, r.tenant_id);
      const fraction = (spent: number, budget: number) => (budget > 0 ? spent / budget : 0);
      const day_fraction = fraction(r.day_usd, limits.daily_budget_usd);
      const month_fraction = fraction(r.month_usd, limits.monthly_budget_usd);
      const worst = Math.max(day_fraction, month_fraction);
      return {
        ...r,
        daily_budget_usd: limits.daily_budget_usd,
        monthly_budget_usd: limits.monthly_budget_usd,
        day_fraction,
        month_fraction,
        state: budgetAction(worst),
      };
    }).sort((a, b) =>
      Math.max(b.day_fraction, b.month_fraction) - Math.max(a.day_fraction, a.month_fraction)
    );
    return c.json({ day, thresholds: THRESHOLDS, tenants, request_id: c.var.requestId });
  });

  return app;
}
