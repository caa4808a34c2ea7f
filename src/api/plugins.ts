import { Hono } from "hono";
import { z } from "zod";
import { requireRole } from "../auth/roles.ts";
import { HIGH_RISK } from "../control/flags.ts";
import { PluginSchema } from "../control/snapshot.ts";
import type { ControlStore } from "../control/store.ts";
import { GatewayError } from "../errors.ts";
import { actorOf, deleteReason, Reason } from "./admin_control.ts";
import { parseBody } from "./body.ts";
import type { AppEnv } from "./context.ts";

export interface PluginRoutesDeps {
  control: ControlStore;
}

interface PluginRow {
  name: string;
  version: string;
  status: "pending_approval" | "approved";
  permissions: string[];
}

/**
 * The plugin registry. Installing is a platform admin's act; a manifest that
 * asks for a high-risk permission waits for a second, explicit approval
 * before its tools can be called. Tenants get permissions through the
 * plugin_permissions flag, default deny.
 */
export function pluginRoutes(deps: PluginRoutesDeps) {
  const { control } = deps;
  const v1 = new Hono<AppEnv>();
  const admin = new Hono<AppEnv>();
  admin.use("*", requireRole("admin"));

  v1.get("/plugins", async (c) => {
    const plugins = (await control.snapshot()).plugins.map((p) => ({
      ...p,
      high_risk: p.permissions.filter((x) => HIGH_RISK.includes(x)),
    }));
    return c.json({ plugins, request_id: c.var.requestId });
  });

  v1.post("/plugins/install", requireRole("admin"), async (c) => {
    const body = await parseBody(
      c,
      z.strictObject({ manifest: PluginSchema, reason: Reason.default("plugin install") }),
    );
    const m = body.manifest;
    const risky = m.permissions.filter((p) => HIGH_RISK.includes(p));
    const status = risky.length ? "pending_approval" : "approved";
    const plugin = await control.change(
      actorOf(c),
      { action: "plugin.install", target: `plugin:${m.name}`, reason: body.reason },
      async (tx) => {
        const [before] = await tx<PluginRow[]>`
          SELECT name, version, status, permissions FROM plugins WHERE name = ${m.name} FOR UPDATE`;
        const others = await tx<{ name: string; tools: string[] }[]>`
          SELECT name, tools FROM plugins WHERE name <> ${m.name} AND tools && ${m.tools}`;
        if (others.length) {
          throw new GatewayError(
            "request.invalid",
            `manifest.tools: already provided by plugin ${others[0].name}`,
            { param: "manifest.tools" },
          );
        }
        await tx`
          INSERT INTO plugins (name, version, description, tools, permissions, status,
            installed_by)
          VALUES (${m.name}, ${m.version}, ${m.description}, ${m.tools}, ${m.permissions},
            ${status}, ${c.var.principal.user_id})
          ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version,
            description = EXCLUDED.description, tools = EXCLUDED.tools,
            permissions = EXCLUDED.permissions, status = EXCLUDED.status,
            installed_by = EXCLUDED.installed_by, approved_by = NULL, installed_at = now()`;
        const after = { ...m, status };
        return { before: before ? { ...before } : null, after, result: after };
      },
    );
    return c.json({
      plugin,
      needs_approval: risky,
      request_id: c.var.requestId,
    }, 201);
  });

  admin.post("/:name/approve", async (c) => {
    const name = c.req.param("name");
    const { reason } = await parseBody(c, z.strictObject({ reason: Reason }));
    await control.change(
      actorOf(c),
      { action: "plugin.approve", target: `plugin:${name}`, reason },
      async (tx) => {
        const [before] = await tx<PluginRow[]>`
          SELECT name, version, status, permissions FROM plugins WHERE name = ${name} FOR UPDATE`;
        if (!before) {
          throw new GatewayError("request.invalid", `plugin ${name} is not installed`, {
            status: 404,
          });
        }
        await tx`UPDATE plugins SET status = 'approved', approved_by = ${c.var.principal.user_id}
          WHERE name = ${name}`;
        return { before: { ...before }, after: { ...before, status: "approved" }, result: null };
      },
    );
    return c.json({ approved: name, request_id: c.var.requestId });
  });

  admin.delete("/:name", async (c) => {
    const name = c.req.param("name");
    const reason = deleteReason(c, "plugin removed");
    await control.change(
      actorOf(c),
      { action: "plugin.remove", target: `plugin:${name}`, reason },
      async (tx) => {
        const [row] = await tx<PluginRow[]>`
          DELETE FROM plugins WHERE name = ${name} RETURNING name, version, status, permissions`;
        if (!row) {
          throw new GatewayError("request.invalid", `plugin ${name} is not installed`, {
            status: 404,
          });
        }
        return { before: { ...row }, after: null, result: null };
      },
    );
    return c.json({ removed: name, request_id: c.var.requestId });
  });

  return { v1, admin };
}
