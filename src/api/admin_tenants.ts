import { own } from "../record.ts";
import { type Context, Hono } from "hono";
import { z } from "zod";
import { requireRole } from "../auth/roles.ts";
import { scopedTenant } from "../auth/tenant_scope.ts";
import type { Clock } from "../clock.ts";
import { type Config, DeploymentSchema, PlanOverrideSchema, PriceSchema } from "../config.ts";
import type { Sql } from "../db/client.ts";
import {
  ModelOverrideSchema,
  TenantPatchSchema,
  type TenantSettings,
  TenantSettingsSchema,
} from "../control/snapshot.ts";
import type { ControlStore } from "../control/store.ts";
import { GatewayError } from "../errors.ts";
import { actorOf, deleteReason, Reason } from "./admin_control.ts";
import { parseBody } from "./body.ts";
import type { AppEnv } from "./context.ts";

export interface AdminTenantsDeps {
  control: ControlStore;
  config: Config;
  clock: Clock;
}

const TenantPutSchema = TenantPatchSchema.extend({ reason: Reason });

const notFound = (what: string) =>
  new GatewayError("request.invalid", `${what} not found`, { status: 404 });

async function readTenant(tx: Sql, id: string) {
  const [row] = await tx<Array<TenantSettings & { created_at: Date }>>`
    SELECT type, plan, limits, downgrade_model, retention_months, tools, created_at
    FROM tenants WHERE id = ${id} FOR UPDATE`;
  if (!row) return null;
  const { created_at: _c, ...settings } = row;
  return TenantSettingsSchema.parse(settings);
}

async function writeTenant(tx: Sql, id: string, t: TenantSettings) {
  await tx`
    INSERT INTO tenants (id, type, plan, limits, downgrade_model, retention_months, tools)
    VALUES (${id}, ${t.type}, ${t.plan}, ${tx.json(t.limits as never)}, ${t.downgrade_model},
      ${t.retention_months}, ${t.tools})
    ON CONFLICT (id) DO UPDATE SET type = EXCLUDED.type, plan = EXCLUDED.plan,
      limits = EXCLUDED.limits, downgrade_model = EXCLUDED.downgrade_model,
      retention_months = EXCLUDED.retention_months, tools = EXCLUDED.tools, updated_at = now()`;
}

/**
 * Tenants, plans, the price table and deployments, and budget overrides.
 * Platform admins change them; a tenant admin reads its own tenant and sets
 * its tool allow-list. Changes reach edges with the next snapshot poll.
 */
export function adminTenantsRoutes(deps: AdminTenantsDeps) {
  const { control, config, clock } = deps;
  const app = new Hono<AppEnv>();
  const admin = requireRole("admin");
  const reply = (c: Context<AppEnv>, body: object, status = 200) =>
    c.json({ ...body, request_id: c.var.requestId }, status as 200);

  const knownPlan = async (plan: string | null | undefined) => {
    if (!plan || config.plans[plan] || (await control.snapshot()).plans[plan]) return;
    throw new GatewayError("request.invalid", `plan: unknown plan "${plan}"`, { param: "plan" });
  };
  const knownModel = (alias: string | null | undefined, param: string) => {
    if (alias && !config.models[alias]) {
      throw new GatewayError("request.invalid", `${param}: unknown model "${alias}"`, { param });
    }
  };

  app.get("/tenants", async (c) => {
    const p = c.var.principal;
    const snap = await control.snapshot();
    const only = scopedTenant(p, undefined);
    const tenants = Object.entries(snap.tenants)
      .filter(([id]) => !only || id === only)
      .map(([id, t]) => ({ id, ...t }));
    return reply(c, { tenants });
  });

  app.get("/tenants/:id", async (c) => {
    const id = scopedTenant(c.var.principal, c.req.param("id"))!;
    const t = own((await control.snapshot()).tenants, id);
    if (!t) throw notFound(`tenant ${id}`);
    return reply(c, { tenant: { id, ...t } });
  });

  app.put("/tenants/:id", admin, async (c) => {
    const id = c.req.param("id");
    const { reason, ...patch } = await parseBody(c, TenantPutSchema);
    await knownPlan(patch.plan);
    knownModel(patch.downgrade_model, "downgrade_model");
    const tenant = await control.change(
      actorOf(c),
      { action: "tenant.upsert", target: `tenant:${id}`, reason },
      async (tx) => {
        const before = await readTenant(tx, id);
        const after = TenantSettingsSchema.parse({ ...before, ...patch });
        await writeTenant(tx, id, after);
        return { before, after, result: after };
      },
    );
    return reply(c, { tenant: { id, ...tenant } });
  });

  app.put("/tenants/:id/tools", async (c) => {
    const id = scopedTenant(c.var.principal, c.req.param("id"))!;
    const body = await parseBody(
      c,
      z.strictObject({ tools: TenantSettingsSchema.shape.tools, reason: Reason }),
    );
    const tenant = await control.change(
      actorOf(c),
      { action: "tenant.tools", target: `tenant:${id}`, reason: body.reason },
      async (tx) => {
        const before = await readTenant(tx, id);
        const after = TenantSettingsSchema.parse({ ...before, tools: body.tools });
        await writeTenant(tx, id, after);
        return { before, after, result: after };
      },
    );
    return reply(c, { tenant: { id, ...tenant } });
  });

  app.delete("/tenants/:id", admin, async (c) => {
    const id = c.req.param("id");
    const reason = deleteReason(c, "tenant settings removed");
    await control.change(
      actorOf(c),
      { action: "tenant.delete", target: `tenant:${id}`, reason },
      async (tx) => {
        const before = await readTenant(tx, id);
        if (!before) throw notFound(`tenant ${id}`);
        await tx`DELETE FROM tenants WHERE id = ${id}`;
        return { before, after: null, result: null };
      },
    );
    return reply(c, { deleted: id });
  });

  app.get("/plans", async (c) => {
    scopedTenant(c.var.principal, undefined);
    const snap = await control.snapshot();
    return reply(c, { plans: { ...config.plans, ...snap.plans } });
  });

  app.put("/plans/:name", admin, async (c) => {
    const name = c.req.param("name");
    const body = await parseBody(c, z.strictObject({ limits: PlanOverrideSchema, reason: Reason }));
    const limits = await control.change(
      actorOf(c),
      { action: "plan.upsert", target: `plan:${name}`, reason: body.reason },
      async (tx) => {
        const [row] = await tx<
          { limits: unknown }[]
        >`SELECT limits FROM plans WHERE name = ${name}`;
        await tx`
          INSERT INTO plans (name, limits) VALUES (${name}, ${tx.json(body.limits as never)})
          ON CONFLICT (name) DO UPDATE SET limits = EXCLUDED.limits, updated_at = now()`;
        return { before: row?.limits ?? null, after: body.limits, result: body.limits };
      },
    );
    return reply(c, { plan: name, limits });
  });

  app.get("/models", (c) => {
    scopedTenant(c.var.principal, undefined);
    const models = Object.fromEntries(
      Object.entries(config.models).map(([alias, m]) => [alias, {
        price: m.price,
        deployments: m.deployments,
        max_output_tokens: m.max_output_tokens,
      }]),
    );
    return reply(c, { models });
  });

  app.put("/models/:alias", admin, async (c) => {
    const alias = c.req.param("alias");
    knownModel(alias, "alias");
    const body = await parseBody(
      c,
      z.strictObject({
        price: PriceSchema.optional(),
        deployments: z.array(DeploymentSchema).min(1).optional(),
        reason: Reason,
      }),
    );
    const kind = (p: string) => config.providers[p]?.protocol.startsWith("realtime_");
    const wanted = kind(config.models[alias].deployments[0].provider);
    for (const [i, d] of (body.deployments ?? []).entries()) {
      if (!config.providers[d.provider] || kind(d.provider) !== wanted) {
        throw new GatewayError(
          "request.invalid",
          `deployments.${i}.provider: "${d.provider}" is not a configured ${
            wanted ? "realtime" : "chat"
          } provider`,
          { param: `deployments.${i}.provider` },
        );
      }
    }
    const override = await control.change(
      actorOf(c),
      { action: "model.update", target: `model:${alias}`, reason: body.reason },
      async (tx) => {
        const [row] = await tx<{ price: unknown; deployments: unknown }[]>`
          SELECT price, deployments FROM model_overrides WHERE alias = ${alias}`;
        const before = row ? ModelOverrideSchema.parse(row) : null;
        const after = ModelOverrideSchema.parse({
          price: body.price ?? before?.price ?? null,
          deployments: body.deployments ?? before?.deployments ?? null,
        });
        await tx`
          INSERT INTO model_overrides (alias, price, deployments)
          VALUES (${alias}, ${after.price && tx.json(after.price)},
            ${after.deployments && tx.json(after.deployments)})
          ON CONFLICT (alias) DO UPDATE SET price = EXCLUDED.price,
            deployments = EXCLUDED.deployments, updated_at = now()`;
        return { before, after, result: after };
      },
    );
    return reply(c, { model: alias, override });
  });

  app.delete("/models/:alias", admin, async (c) => {
    const alias = c.req.param("alias");
    const reason = deleteReason(c, "model override removed");
    await control.change(
      actorOf(c),
      { action: "model.reset", target: `model:${alias}`, reason },
      async (tx) => {
        const [row] =
          await tx`DELETE FROM model_overrides WHERE alias = ${alias} RETURNING price, deployments`;
        if (!row) throw notFound(`override of model ${alias}`);
        return { before: { ...row }, after: null, result: null };
      },
    );
    return reply(c, { reset: alias });
  });

  const OverrideSchema = z.strictObject({
    reason: Reason,
    ttl_s: z.number().int().positive().max(config.guardrails.override_max_ttl_s),
  });
  const path = "/tenants/:tenant/budget-override";

  app.put(path, admin, async (c) => {
    const tenant = c.req.param("tenant");
    const { reason, ttl_s } = await parseBody(c, OverrideSchema);
    const override = {
      tenant_id: tenant,
      reason,
      by: c.var.principal.user_id,
      expires_at: clock.now() + ttl_s * 1000,
    };
    await control.change(
      actorOf(c),
      { action: "budget_override.set", target: `tenant:${tenant}`, reason },
      async (tx) => {
        const [before] = await tx`SELECT reason, by_user, expires_at FROM budget_overrides
          WHERE tenant_id = ${tenant}`;
        await tx`
          INSERT INTO budget_overrides (tenant_id, reason, by_user, expires_at)
          VALUES (${tenant}, ${reason}, ${override.by}, ${new Date(override.expires_at)})
          ON CONFLICT (tenant_id) DO UPDATE SET reason = EXCLUDED.reason,
            by_user = EXCLUDED.by_user, expires_at = EXCLUDED.expires_at`;
        return { before: before ? { ...before } : null, after: override, result: null };
      },
    );
    return reply(c, { override });
  });

  app.get(path, admin, async (c) => {
    const tenant = c.req.param("tenant");
    const override = (await control.snapshot()).budget_overrides.find((o) =>
      o.tenant_id === tenant && o.expires_at > clock.now()
    );
    if (!override) throw notFound("an active budget override for this tenant");
    return reply(c, { override });
  });

  app.delete(path, admin, async (c) => {
    const tenant = c.req.param("tenant");
    const reason = deleteReason(c, "budget override cleared");
    await control.change(
      actorOf(c),
      { action: "budget_override.clear", target: `tenant:${tenant}`, reason },
      async (tx) => {
        const [before] = await tx`DELETE FROM budget_overrides WHERE tenant_id = ${tenant}
          RETURNING reason, by_user, expires_at`;
        return { before: before ? { ...before } : null, after: null, result: null };
      },
    );
    return reply(c, { cleared: true });
  });

  return app;
}
