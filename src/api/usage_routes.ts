import type { ControlStore } from "../control/store.ts";
import { overlaid } from "../control/view.ts";
import { usageByUser } from "../metering/stats.ts";
import { Hono } from "hono";
import { z } from "zod";
import { scopedTenant } from "../auth/tenant_scope.ts";
import { tenantLimits } from "../budget/limits.ts";
import { budgetAction } from "../budget/store.ts";
import type { Clock } from "../clock.ts";
import type { Config } from "../config.ts";
import type { Sql } from "../db/client.ts";
import { GatewayError } from "../errors.ts";
import { parseQuery } from "./body.ts";
import { csvCell } from "../metering/gdpr.ts";
import { billingRows, listEvents, monthStart, tenantTotals } from "../metering/ledger.ts";
import type { AppEnv } from "./context.ts";

export interface UsageRouteDeps {
  config: Config;
  sql: Sql;
  clock: Clock;
  /** The admin API's tenants and plans, which the config file alone does not hold. */
  control: ControlStore;
}

const EventQuery = z.strictObject({
  tenant_id: z.string().min(1).optional(),
  user_id: z.string().min(1).optional(),
  model: z.string().min(1).optional(),
  success: z.enum(["true", "false"]).optional(),
  from: z.iso.datetime().optional(),
  to: z.iso.datetime().optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  cursor: z.string().min(1).optional(),
});

const UsersQuery = z.strictObject({
  period: z.enum(["day", "month"]).default("day"),
  tenant_id: z.string().min(1).optional(),
});

const BillingQuery = z.strictObject({
  month: z.string().regex(/^\d{4}-(0[1-9]|1[0-2])$/, "must be YYYY-MM"),
  tenant_id: z.string().min(1).optional(),
});

const encodeCursor = (row: { occurred_at: string; request_id: string }) =>
  btoa(JSON.stringify([row.occurred_at, row.request_id]));

function decodeCursor(cursor: string) {
  try {
    const [occurred_at, request_id] = JSON.parse(atob(cursor));
    if (typeof occurred_at === "string" && typeof request_id === "string") {
      return { occurred_at, request_id };
    }
  } catch {
    // fall through to the error below
  }
  throw new GatewayError("request.invalid", "cursor is not one this API returned", {
    param: "cursor",
  });
}

/** Usage and billing reads from the ledger (the aggregator's truth). */
export function usageRoutes(deps: UsageRouteDeps) {
  const { config, sql, clock } = deps;
  const app = new Hono<AppEnv>();

  app.get("/current", async (c) => {
    const { tenant_id } = c.var.principal;
    const day = new Date(clock.now()).toISOString().slice(0, 10);
    const [today, month] = await Promise.all([
      tenantTotals(sql, tenant_id, day, day),
      tenantTotals(sql, tenant_id, monthStart(day), day),
    ]);
    const limits = tenantLimits(overlaid(config, await deps.control.snapshot()), tenant_id);
    const state = (spent: number, budget: number) => {
      const fraction = budget > 0 ? spent / budget : 0;
      return {
        spent_usd: spent,
        budget_usd: budget,
        fraction,
        action: budgetAction(fraction),
      };
    };
    return c.json({
      tenant_id,
      day: { date: day, ...today, budget: state(today.managed_cost_usd, limits.daily_budget_usd) },
      month: {
        month: day.slice(0, 7),
        ...month,
        budget: state(month.managed_cost_usd, limits.monthly_budget_usd),
      },
      request_id: c.var.requestId,
    });
  });

  /** The tenant's usage per user, this UTC day or month. */
  app.get("/users", async (c) => {
    const q = parseQuery(c, UsersQuery);
    const tenant = scopedTenant(c.var.principal, q.tenant_id) ?? c.var.principal.tenant_id;
    const day = new Date(clock.now()).toISOString().slice(0, 10);
    const from = q.period === "day" ? day : monthStart(day);
    return c.json({
      tenant_id: tenant,
      period: q.period,
      from,
      to: day,
      users: await usageByUser(sql, tenant, from, day),
      request_id: c.var.requestId,
    });
  });

  app.get("/events", async (c) => {
    const q = parseQuery(c, EventQuery);
    const tenant = scopedTenant(c.var.principal, q.tenant_id);
    const rows = await listEvents(sql, {
      tenant_id: tenant,
      user_id: q.user_id,
      model: q.model,
      success: q.success === undefined ? undefined : q.success === "true",
      from: q.from,
      to: q.to,
      after: q.cursor ? decodeCursor(q.cursor) : undefined,
      limit: q.limit,
    });
    return c.json({
      data: rows,
      next_cursor: rows.length === q.limit ? encodeCursor(rows[rows.length - 1]) : null,
      request_id: c.var.requestId,
    });
  });

  app.get("/billing.csv", async (c) => {
    const q = parseQuery(c, BillingQuery);
    const tenant = scopedTenant(c.var.principal, q.tenant_id) ?? c.var.principal.tenant_id;
    const rows = await billingRows(sql, tenant, q.month);
    const header =
      "tenant_id,day,model,lane,requests,input_tokens,output_tokens,tool_calls,audio_seconds,cost_usd";
    const lines = rows.map((r) =>
      [
        tenant,
        r.day,
        r.model,
        r.mode,
        r.requests,
        r.input_tokens,
        r.output_tokens,
        r.tool_calls,
        r.audio_seconds,
        r.cost_usd,
      ]
        .map(csvCell).join(",")
    );
    const total = rows.reduce((sum, r) => sum + Math.round(Number(r.cost_usd) * 1e6), 0) / 1e6;
    lines.push(
      [tenant, "total", "", "", "", "", "", "", "", total.toFixed(6)].map(csvCell).join(","),
    );
    c.header("content-type", "text/csv; charset=utf-8");
    c.header("content-disposition", `attachment; filename="billing-${tenant}-${q.month}.csv"`);
    return c.body([header, ...lines].join("\n") + "\n");
  });

  return app;
}
