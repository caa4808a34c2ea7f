import { Hono } from "hono";
import { scopedTenant } from "../auth/tenant_scope.ts";
import type { Sql } from "../db/client.ts";
import { GatewayError } from "../errors.ts";
import type { Logger } from "../obs/log.ts";
import { exportEvents, pseudonymiseUser } from "../metering/gdpr.ts";
import type { AppEnv } from "./context.ts";

export interface AdminLedgerDeps {
  sql: Sql;
  /** Key of the pseudonym hash; stable so that a user's totals still add up. */
  pseudonymKey: string;
  log: Logger;
}

/** Ledger administration: user deletion (pseudonymisation) and GDPR export. */
export function adminLedgerRoutes(deps: AdminLedgerDeps) {
  const { sql, pseudonymKey, log } = deps;
  const app = new Hono<AppEnv>();

  app.delete("/tenants/:tenant/users/:user", async (c) => {
    const tenant = c.req.param("tenant");
    scopedTenant(c.var.principal, tenant);
    const result = await pseudonymiseUser(sql, tenant, c.req.param("user"), pseudonymKey);
    log.warn("user deleted; usage pseudonymised", {
      tenant_id: tenant,
      pseudonym: result.pseudonym,
      rows: result.rows,
      by: c.var.principal.user_id,
    });
    return c.json({ ...result, request_id: c.var.requestId });
  });

  app.get("/tenants/:tenant/export", async (c) => {
    const tenant = c.req.param("tenant");
    scopedTenant(c.var.principal, tenant);
    const format = c.req.query("format") ?? "jsonl";
    if (format !== "jsonl" && format !== "csv") {
      throw new GatewayError("request.invalid", "format must be jsonl or csv", { param: "format" });
    }
    const user = c.req.query("user_id");
    const out = await exportEvents(sql, tenant, user, format);
    c.header("content-type", format === "csv" ? "text/csv; charset=utf-8" : "application/x-ndjson");
    c.header("x-checksum-sha256", out.sha256);
    c.header("x-export-rows", String(out.rows));
    c.header(
      "content-disposition",
      `attachment; filename="usage-${tenant}${user ? `-${user}` : ""}.${format}"`,
    );
    return c.body(out.body);
  });

  return app;
}
