import { Hono } from "hono";
import { z } from "zod";
import type { Clock } from "../clock.ts";
import type { Config } from "../config.ts";
import { AuditEntrySchema } from "../control/audit.ts";
import { applyMitigation, revertMitigation } from "../control/levers.ts";
import { MitigationNameSchema } from "../control/mitigations.ts";
import type { ControlStore } from "../control/store.ts";
import { GatewayError } from "../errors.ts";
import { verifyBody } from "../metering/signature.ts";
import { parseJsonText } from "./body.ts";
import type { AppEnv } from "./context.ts";

export interface InternalControlDeps {
  control: ControlStore;
  config: Config;
  secret: string;
  clock: Clock;
}

const AuditBatchSchema = z.strictObject({ entries: z.array(AuditEntrySchema).max(500) });
const AutopilotSchema = z.strictObject({
  edge_id: z.string().min(1),
  mitigation: MitigationNameSchema,
  active: z.boolean(),
  params: z.record(z.string(), z.unknown()).optional(),
  reason: z.string().min(1),
});

/** Edge-to-aggregator control routes, HMAC-signed like metering. */
export function internalControlRoutes(deps: InternalControlDeps) {
  const { control, secret, clock } = deps;
  const app = new Hono<AppEnv>();

  async function signedJson<S extends z.ZodType>(
    raw: string,
    header: string | undefined,
    schema: S,
  ) {
    if (!(await verifyBody(secret, raw, header, clock.now()))) {
      throw new GatewayError("auth.invalid", "missing or bad x-convergio-signature");
    }
    return parseJsonText(raw, schema);
  }

  app.get("/control/snapshot", async (c) => {
    const url = new URL(c.req.url);
    if (
      !(await verifyBody(secret, url.pathname, c.req.header("x-convergio-signature"), clock.now()))
    ) {
      throw new GatewayError("auth.invalid", "missing or bad x-convergio-signature");
    }
    const snapshot = await control.snapshot();
    const etag = `"${snapshot.version}"`;
    c.header("etag", etag);
    if (c.req.header("if-none-match") === etag) return c.body(null, 304);
    return c.json(snapshot);
  });

  app.post("/control/audit", async (c) => {
    const raw = await c.req.text();
    const { entries } = await signedJson(
      raw,
      c.req.header("x-convergio-signature"),
      AuditBatchSchema,
    );
    for (const e of entries) await control.record(e);
    return c.json({ recorded: entries.length });
  });

  app.post("/control/autopilot", async (c) => {
    const raw = await c.req.text();
    const body = await signedJson(raw, c.req.header("x-convergio-signature"), AutopilotSchema);
    const who = { actor: "autopilot", actor_tenant: null, request_id: c.var.requestId };
    const state = body.active
      ? await applyMitigation(control, deps.config, who, body.mitigation, {
        params: body.params,
        reason: body.reason,
        source: body.edge_id,
      })
      : await revertMitigation(control, who, body.mitigation, {
        reason: body.reason,
        source: body.edge_id,
      }).catch((err) => {
        // Already lifted by an operator: nothing left to withdraw from.
        if (err instanceof GatewayError && err.status === 404) return null;
        throw err;
      });
    return c.json({ mitigation: body.mitigation, state });
  });

  return app;
}
