import { Hono } from "hono";
import { z } from "zod";
import { requireRole } from "../auth/roles.ts";
import { scopedTenant } from "../auth/tenant_scope.ts";
import type { Config } from "../config.ts";
import type { Sql } from "../db/client.ts";
import type { DbHealth } from "../control/db_health.ts";
import type { ControlStore } from "../control/store.ts";
import { GatewayError } from "../errors.ts";
import { EnvelopeSchema } from "../keys/envelope.ts";
import { keyRef, type KeyStore } from "../keys/keystore.ts";
import { actorOf, deleteReason, Reason } from "./admin_control.ts";
import { parseBody } from "./body.ts";
import type { AppEnv } from "./context.ts";

export interface AdminByokDeps {
  control: ControlStore;
  config: Config;
  sql: Sql;
  health: DbHealth;
  keys: KeyStore;
}

interface ByokRow {
  provider: string;
  key_ref: string;
  envelope: unknown;
  created_at: Date;
  updated_at: Date;
}

/**
 * Tenants' own provider keys. A key goes in once and never comes back out:
 * answers and audit entries carry its reference only. Tenant admins manage
 * their own tenant's keys.
 */
export function adminByokRoutes(deps: AdminByokDeps) {
  const { control, config, keys } = deps;
  const app = new Hono<AppEnv>();
  const path = "/tenants/:id/byok-keys";

  const provider = (name: string) => {
    const p = config.providers[name];
    if (!p || !["openai", "anthropic", "realtime_openai"].includes(p.protocol)) {
      throw new GatewayError("request.invalid", `provider: "${name}" takes no API key`, {
        param: "provider",
        status: 404,
      });
    }
    return name;
  };

  app.get(path, async (c) => {
    const tenant = scopedTenant(c.var.principal, c.req.param("id"))!;
    const rows = await deps.health.run("byok_read", () =>
      deps.sql<ByokRow[]>`
        SELECT provider, key_ref, envelope, created_at, updated_at FROM byok_keys
        WHERE tenant_id = ${tenant} ORDER BY provider`);
    const list = rows.map(({ envelope: _e, ...r }) => r);
    return c.json({ tenant_id: tenant, keys: list, request_id: c.var.requestId });
  });

  app.put(`${path}/:provider`, async (c) => {
    const tenant = scopedTenant(c.var.principal, c.req.param("id"))!;
    const name = provider(c.req.param("provider"));
    const body = await parseBody(
      c,
      z.strictObject({
        api_key: z.string().min(8).max(4096),
        reason: Reason.default("BYOK key set"),
      }),
    );
    const ref = keyRef(tenant, name);
    const envelope = await keys.store(ref, body.api_key);
    await control.change(
      actorOf(c),
      { action: "byok.set", target: `tenant:${tenant}`, reason: body.reason },
      async (tx) => {
        const [before] = await tx<{ key_ref: string }[]>`
          SELECT key_ref FROM byok_keys WHERE tenant_id = ${tenant} AND provider = ${name}`;
        await tx`
          INSERT INTO byok_keys (tenant_id, provider, key_ref, envelope)
          VALUES (${tenant}, ${name}, ${ref}, ${envelope && tx.json(envelope)})
          ON CONFLICT (tenant_id, provider) DO UPDATE SET key_ref = EXCLUDED.key_ref,
            envelope = EXCLUDED.envelope, updated_at = now()`;
        const after = { provider: name, key_ref: ref, replaced: !!before };
        return {
          before: before ? { provider: name, key_ref: before.key_ref } : null,
          after,
          result: null,
        };
      },
    );
    return c.json({ tenant_id: tenant, provider: name, key_ref: ref, request_id: c.var.requestId });
  });

  app.delete(`${path}/:provider`, async (c) => {
    const tenant = scopedTenant(c.var.principal, c.req.param("id"))!;
    const name = c.req.param("provider");
    const reason = deleteReason(c, "BYOK key removed");
    const ref = await control.change(
      actorOf(c),
      { action: "byok.delete", target: `tenant:${tenant}`, reason },
      async (tx) => {
        const [row] = await tx<{ key_ref: string }[]>`
          DELETE FROM byok_keys WHERE tenant_id = ${tenant} AND provider = ${name}
          RETURNING key_ref`;
        if (!row) {
          throw new GatewayError("request.invalid", `tenant ${tenant} has no key for ${name}`, {
            status: 404,
          });
        }
        return {
          before: { provider: name, key_ref: row.key_ref },
          after: null,
          result: row.key_ref,
        };
      },
    );
    await keys.remove(ref);
    return c.json({ removed: ref, request_id: c.var.requestId });
  });

  /** Re-wraps every local envelope under the newest master key; edges keep working throughout. */
  app.post("/byok/rotate", requireRole("admin"), async (c) => {
    const { reason } = await parseBody(c, z.strictObject({ reason: Reason }));
    const rewrapped = await control.change(
      actorOf(c),
      { action: "byok.rotate", target: "byok", reason },
      async (tx) => {
        const rows = await tx<ByokRow[]>`SELECT key_ref, envelope FROM byok_keys FOR UPDATE`;
        let n = 0;
        for (const r of rows) {
          const before = r.envelope ? EnvelopeSchema.parse(r.envelope) : null;
          const after = await keys.rewrap(r.key_ref, before);
          if (after && before && after.master_version !== before.master_version) {
            await tx`UPDATE byok_keys SET envelope = ${tx.json(after)}, updated_at = now()
              WHERE key_ref = ${r.key_ref}`;
            n++;
          }
        }
        return { before: null, after: { rewrapped: n }, result: n };
      },
    );
    return c.json({ rewrapped, request_id: c.var.requestId });
  });

  return app;
}
