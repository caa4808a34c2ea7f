import { type Context, Hono } from "hono";
import { z } from "zod";
import { requireRole } from "../auth/roles.ts";
import { scopedTenant } from "../auth/tenant_scope.ts";
import type { Config } from "../config.ts";
import type { Sql } from "../db/client.ts";
import { AuditQuerySchema, queryAudit, verifyAudit } from "../control/audit.ts";
import type { DbHealth } from "../control/db_health.ts";
import {
  defaultFlagState,
  evaluateFlag,
  FLAG_NAMES,
  type FlagName,
  FlagNameSchema,
} from "../control/flags.ts";
import {
  applyMitigation,
  changeFlag,
  revertMitigation,
  rollbackLastFlagChange,
} from "../control/levers.ts";
import { MITIGATION_DEFS, MITIGATION_NAMES, MitigationNameSchema } from "../control/mitigations.ts";
import type { Actor, ControlStore } from "../control/store.ts";
import { GatewayError } from "../errors.ts";
import { parseBody } from "./body.ts";
import type { AppEnv } from "./context.ts";

export interface AdminControlDeps {
  control: ControlStore;
  config: Config;
  sql: Sql;
  health: DbHealth;
}

export function actorOf(c: Context<AppEnv>): Actor {
  const p = c.var.principal;
  return { actor: p.user_id, actor_tenant: p.tenant_id, request_id: c.var.requestId };
}

/** Why an operator acts; the audit log keeps it. */
export const Reason = z.string().trim().min(3).max(500);
const ReasonOnly = z.strictObject({ reason: Reason });

function flagName(c: Context<AppEnv>): FlagName {
  const r = FlagNameSchema.safeParse(c.req.param("name"));
  if (!r.success) {
    throw new GatewayError("request.invalid", `unknown flag; flags are ${FLAG_NAMES.join(", ")}`, {
      status: 404,
    });
  }
  return r.data;
}

/** The `reason` of a DELETE, from the query string. */
export function deleteReason(c: Context<AppEnv>, fallback?: string): string {
  const r = Reason.safeParse(c.req.query("reason") ?? fallback);
  if (!r.success) {
    throw new GatewayError("request.invalid", "reason: give ?reason= (3 to 500 characters)", {
      param: "reason",
    });
  }
  return r.data;
}

/**
 * Flags with canary and kill switch, runbook mitigations, and the audit log.
 * Platform admins only, except the audit log, which tenant admins read for
 * their own tenant.
 */
export function adminControlRoutes(deps: AdminControlDeps) {
  const { control, config } = deps;
  const app = new Hono<AppEnv>();
  app.use("/flags/*", requireRole("admin"));
  app.use("/flags", requireRole("admin"));
  app.use("/mitigations/*", requireRole("admin"));
  app.use("/mitigations", requireRole("admin"));
  app.use("/audit/verify", requireRole("admin"));

  const flag = (
    c: Context<AppEnv>,
    action: string,
    reason: string,
    edit: Parameters<typeof changeFlag>[6],
  ) => changeFlag(control, config, actorOf(c), flagName(c), action, reason, edit);
  const reply = (c: Context<AppEnv>, body: object) =>
    c.json({ ...body, request_id: c.var.requestId });

  app.get("/flags", async (c) => {
    const snap = await control.snapshot();
    const tenant = c.req.query("tenant");
    const flags = Object.fromEntries(FLAG_NAMES.map((name) => {
      const state = snap.flags[name] ?? defaultFlagState(name);
      return [name, tenant ? { ...state, for_tenant: evaluateFlag(name, state, tenant) } : state];
    }));
    return reply(c, { flags, version: snap.version });
  });

  app.post("/flags/rollback", async (c) => {
    const { reason } = await parseBody(c, ReasonOnly);
    return reply(c, await rollbackLastFlagChange(control, config, actorOf(c), reason));
  });

  app.put("/flags/:name", async (c) => {
    const body = await parseBody(
      c,
      z.strictObject({
        default: z.unknown().optional(),
        overrides: z.record(z.string().min(1), z.unknown()).optional(),
        reason: Reason,
      }),
    );
    const state = await flag(c, "update", body.reason, (s) => ({
      ...s,
      default: body.default === undefined ? s.default : body.default,
      overrides: body.overrides ?? s.overrides,
    }));
    return reply(c, { flag: flagName(c), state });
  });

  app.put("/flags/:name/overrides/:tenant", async (c) => {
    const body = await parseBody(c, z.strictObject({ value: z.unknown(), reason: Reason }));
    const tenant = c.req.param("tenant");
    const state = await flag(c, "override.set", body.reason, (s) => ({
      ...s,
      overrides: { ...s.overrides, [tenant]: body.value },
    }));
    return reply(c, { flag: flagName(c), state });
  });

  app.delete("/flags/:name/overrides/:tenant", async (c) => {
    const tenant = c.req.param("tenant");
    const state = await flag(c, "override.clear", deleteReason(c), (s) => {
      const { [tenant]: _gone, ...overrides } = s.overrides;
      return { ...s, overrides };
    });
    return reply(c, { flag: flagName(c), state });
  });

  app.put("/flags/:name/canary", async (c) => {
    const body = await parseBody(
      c,
      z.strictObject({
        percent: z.number().int().min(1).max(100),
        value: z.unknown(),
        reason: Reason,
      }),
    );
    const state = await flag(c, "canary.set", body.reason, (s) => ({
      ...s,
      canary: { percent: body.percent, value: body.value },
    }));
    return reply(c, { flag: flagName(c), state });
  });

  const noCanary = (name: FlagName) =>
    new GatewayError("request.invalid", `flag ${name} has no canary in progress`, { status: 409 });

  app.post("/flags/:name/canary/promote", async (c) => {
    const { reason } = await parseBody(c, ReasonOnly);
    const name = flagName(c);
    const state = await flag(c, "canary.promote", reason, (s) => {
      if (!s.canary) throw noCanary(name);
      return { ...s, default: s.canary.value, canary: null };
    });
    return reply(c, { flag: name, state });
  });

  app.post("/flags/:name/canary/rollback", async (c) => {
    const { reason } = await parseBody(c, ReasonOnly);
    const name = flagName(c);
    const state = await flag(c, "canary.rollback", reason, (s) => {
      if (!s.canary) throw noCanary(name);
      return { ...s, canary: null };
    });
    return reply(c, { flag: name, state });
  });

  app.post("/flags/:name/kill", async (c) => {
    const { reason } = await parseBody(c, ReasonOnly);
    const state = await flag(c, "kill", reason, (s) => ({ ...s, killed: true }));
    return reply(c, { flag: flagName(c), state });
  });

  app.delete("/flags/:name/kill", async (c) => {
    const state = await flag(c, "unkill", deleteReason(c), (s) => ({ ...s, killed: false }));
    return reply(c, { flag: flagName(c), state });
  });

  app.get("/mitigations", async (c) => {
    const snap = await control.snapshot();
    const mitigations = Object.fromEntries(MITIGATION_NAMES.map((name) => [name, {
      runbook: MITIGATION_DEFS[name].runbook,
      active: snap.mitigations[name] ?? null,
    }]));
    return reply(c, { mitigations });
  });

  const mitigationName = (c: Context<AppEnv>) => {
    const r = MitigationNameSchema.safeParse(c.req.param("name"));
    if (!r.success) {
      throw new GatewayError(
        "request.invalid",
        `unknown mitigation; mitigations are ${MITIGATION_NAMES.join(", ")}`,
        { status: 404 },
      );
    }
    return r.data;
  };

  app.post("/mitigations/:name", async (c) => {
    const name = mitigationName(c);
    const body = await parseBody(
      c,
      z.strictObject({ params: z.record(z.string(), z.unknown()).optional(), reason: Reason }),
    );
    const state = await applyMitigation(control, config, actorOf(c), name, body);
    return reply(c, { mitigation: name, state });
  });

  app.delete("/mitigations/:name", async (c) => {
    const name = mitigationName(c);
    await revertMitigation(control, actorOf(c), name, { reason: deleteReason(c) });
    return reply(c, { mitigation: name, state: null });
  });

  app.get("/audit", async (c) => {
    const q = AuditQuerySchema.safeParse(c.req.query());
    if (!q.success) {
      const issue = q.error.issues[0];
      throw new GatewayError("request.invalid", `${issue.path.join(".")}: ${issue.message}`);
    }
    const tenant = scopedTenant(c.var.principal, q.data.tenant);
    const entries = await deps.health.run(
      "audit_read",
      () => queryAudit(deps.sql, { ...q.data, tenant }),
    );
    return reply(c, { entries, next_before_id: entries.at(-1)?.id ?? null });
  });

  app.get("/audit/verify", async (c) => {
    const verdict = await deps.health.run("audit_read", () => verifyAudit(deps.sql));
    return reply(c, verdict);
  });

  return app;
}
