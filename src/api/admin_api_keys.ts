import { type Context, Hono } from "hono";
import { z } from "zod";
import type { ApiKeyStore } from "../auth/api_keys.ts";
import { scopedTenant } from "../auth/tenant_scope.ts";
import { ModeSchema, ROLE_NAMES } from "../config.ts";
import type { ControlStore } from "../control/store.ts";
import { GatewayError } from "../errors.ts";
import { actorOf, deleteReason, Reason } from "./admin_control.ts";
import { parseBody } from "./body.ts";
import type { AppEnv } from "./context.ts";

export interface AdminApiKeysDeps {
  apiKeys: ApiKeyStore;
  control: ControlStore;
}

const NewKeySchema = z.strictObject({
  tenant_id: z.string().min(1),
  user_id: z.string().min(1),
  roles: z.array(z.enum(ROLE_NAMES)).min(1).default(["user"]),
  mode: ModeSchema.default("byok"),
  reason: Reason.default("new API key"),
});

/**
 * API keys: create, list, rotate and revoke, each audited. A tenant admin
 * manages its own tenant's keys and cannot mint platform admins.
 */
export function adminApiKeysRoutes(deps: AdminApiKeysDeps) {
  const { apiKeys, control } = deps;
  const app = new Hono<AppEnv>();

  app.get("/api-keys", async (c) => {
    const tenant = scopedTenant(c.var.principal, c.req.query("tenant_id"));
    return c.json({ keys: await apiKeys.list(tenant), request_id: c.var.requestId });
  });

  app.post("/api-keys", async (c) => {
    const { reason, ...owner } = await parseBody(c, NewKeySchema);
    const p = c.var.principal;
    scopedTenant(p, owner.tenant_id);
    if (owner.roles.includes("admin") && !p.roles.includes("admin")) {
      throw new GatewayError("auth.forbidden", "only platform admins can grant the admin role");
    }
    const created = await control.change(
      actorOf(c),
      { action: "api_key.create", target: `tenant:${owner.tenant_id}`, reason },
      async (tx) => {
        const k = await apiKeys.create(owner, tx);
        return { before: null, after: { id: k.id, ...owner }, result: k };
      },
    );
    return c.json(
      { id: created.id, api_key: created.key, ...owner, request_id: c.var.requestId },
      201,
    );
  });

  /** Loads a key the caller may manage; another tenant's key is simply not found. */
  const ownKey = async (c: Context<AppEnv>, id: string) => {
    const key = await apiKeys.get(id);
    const p = c.var.principal;
    if (!key || (!p.roles.includes("admin") && key.tenant_id !== p.tenant_id)) {
      scopedTenant(p, undefined);
      throw new GatewayError("request.invalid", `API key ${id} not found`, { status: 404 });
    }
    if (key.revoked_at) {
      throw new GatewayError("request.invalid", `API key ${id} is revoked`, { status: 409 });
    }
    if (key.roles.includes("admin") && !p.roles.includes("admin")) {
      throw new GatewayError("auth.forbidden", "only platform admins manage admin keys");
    }
    return key;
  };

  app.post("/api-keys/:id/rotate", async (c) => {
    const id = c.req.param("id");
    const { reason } = await parseBody(c, z.strictObject({ reason: Reason.default("rotation") }));
    const old = await ownKey(c, id);
    const owner = {
      tenant_id: old.tenant_id,
      user_id: old.user_id,
      roles: old.roles,
      mode: old.mode,
    };
    const created = await control.change(
      actorOf(c),
      { action: "api_key.rotate", target: `tenant:${old.tenant_id}`, reason },
      async (tx) => {
        await apiKeys.revoke(id, tx);
        const k = await apiKeys.create(owner, tx);
        return { before: { id }, after: { id: k.id, ...owner }, result: k };
      },
    );
    return c.json({
      id: created.id,
      api_key: created.key,
      replaces: id,
      ...owner,
      request_id: c.var.requestId,
    }, 201);
  });

  app.delete("/api-keys/:id", async (c) => {
    const id = c.req.param("id");
    const reason = deleteReason(c, "revoked");
    const key = await ownKey(c, id);
    await control.change(
      actorOf(c),
      { action: "api_key.revoke", target: `tenant:${key.tenant_id}`, reason },
      async (tx) => {
        await apiKeys.revoke(id, tx);
        return { before: { id, revoked_at: null }, after: { id, revoked: true }, result: null };
      },
    );
    return c.json({ revoked: id, request_id: c.var.requestId });
  });

  return app;
}
