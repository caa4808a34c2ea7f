import { Hono } from "hono";
import type { Clock } from "../clock.ts";
import type { Sql } from "../db/client.ts";
import { GatewayError } from "../errors.ts";
import type { Logger } from "../obs/log.ts";
import type { Metrics } from "../obs/metrics.ts";
import { ingestBatch } from "../metering/ingest.ts";
import { managedSpend } from "../metering/ledger.ts";
import { verifyBody } from "../metering/signature.ts";
import { BatchSchema } from "../metering/usage_event.ts";
import type { AppEnv } from "./context.ts";
import type { DbHealth } from "../control/db_health.ts";

export interface InternalMeteringDeps {
  sql: Sql;
  metrics: Metrics;
  secret: string;
  clock: Clock;
  log: Logger;
  health: DbHealth;
}

/** Service-to-service routes: edges deliver batches and read rollups, HMAC-signed. */
export function internalMeteringRoutes(deps: InternalMeteringDeps) {
  const { sql, secret, clock, log, metrics, health } = deps;
  const app = new Hono<AppEnv>();

  const requireSignature = async (payload: string, header: string | undefined) => {
    if (!(await verifyBody(secret, payload, header, clock.now()))) {
      throw new GatewayError("auth.invalid", "missing or bad x-convergio-signature");
    }
  };

  app.post("/metering/batches", async (c) => {
    const raw = await c.req.text();
    await requireSignature(raw, c.req.header("x-convergio-signature"));
    let json: unknown;
    try {
      json = JSON.parse(raw);
    } catch {
      throw new GatewayError("request.invalid", "batch is not valid JSON");
    }
    const batch = BatchSchema.safeParse(json);
    if (!batch.success) {
      const issue = batch.error.issues[0];
      log.error("metering: malformed batch refused", { reason: issue.message });
      throw new GatewayError(
        "request.invalid",
        `${issue.path.join(".") || "batch"}: ${issue.message}`,
      );
    }
    try {
      // Read-only mode answers 503 db.read_only at once; the edge keeps the batch spooled.
      const result = await health.run(
        "ingest",
        () => ingestBatch(sql, batch.data.batch_id, batch.data.events),
      );
      if (result.rejected.length) {
        log.error("metering: invalid events kept aside", {
          batch_id: result.batch_id,
          edge_id: batch.data.edge_id,
          rejected: result.rejected.length,
        });
      }
      return c.json(result);
    } catch (err) {
      if (err instanceof GatewayError) throw err;
      metrics.dbErrors.inc({ op: "ingest" });
      log.error("metering: ledger write failed", { error: (err as Error).message });
      throw new GatewayError("internal", "ledger unavailable; retry the batch", {
        status: 503,
        retryable: true,
        cause: err,
      });
    }
  });

  app.get("/metering/rollups", async (c) => {
    const url = new URL(c.req.url);
    await requireSignature(url.pathname + url.search, c.req.header("x-convergio-signature"));
    const day = c.req.query("day") ?? "";
    if (!/^\d{4}-\d{2}-\d{2}$/.test(day)) {
      throw new GatewayError("request.invalid", "day must be YYYY-MM-DD", { param: "day" });
    }
    return c.json(await managedSpend(sql, day));
  });

  return app;
}
