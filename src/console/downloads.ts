import { type Context, Hono } from "hono";
import type { ApiClient } from "./api_client.ts";
import type { ConsoleEnv } from "./session.ts";

type Api = (c: Context<ConsoleEnv>) => ApiClient;

const KEPT = ["content-type", "content-disposition", "x-checksum-sha256", "x-export-rows"];

/** The API's file, with the headers that make it a named download and prove its content. */
function passOn(res: Response): Response {
  const headers = new Headers();
  for (const name of KEPT) {
    const v = res.headers.get(name);
    if (v) headers.set(name, v);
  }
  return new Response(res.body, { status: res.status, headers });
}

/** The billing CSV and the GDPR export as browser downloads; the API scopes the tenant. */
export function downloadRoutes(api: Api) {
  const app = new Hono<ConsoleEnv>();
  app.get("/billing.csv", async (c) => {
    const q = new URLSearchParams({ month: c.req.query("month") ?? "" });
    const tenant = c.req.query("tenant");
    if (tenant) q.set("tenant_id", tenant);
    return passOn(await api(c).download(`/v1/usage/billing.csv?${q}`));
  });
  app.get("/export", async (c) => {
    const tenant = c.req.query("tenant") || c.var.principal.tenant_id;
    const q = new URLSearchParams({ format: c.req.query("format") ?? "csv" });
    return passOn(
      await api(c).download(`/admin/tenants/${encodeURIComponent(tenant)}/export?${q}`),
    );
  });
  return app;
}
