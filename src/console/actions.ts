import { type Context, Hono } from "hono";
import type { ApiClient } from "./api_client.ts";
import type { ConsoleEnv } from "./session.ts";

type Api = (c: Context<ConsoleEnv>) => ApiClient;

/**
 * The console's writes: plain HTML forms, each one admin API call with the
 * caller's token and reason (so RBAC, validation and audit are the API's),
 * then a redirect back to the page (POST-redirect-GET).
 */
export function actionRoutes(api: Api) {
  const app = new Hono<ConsoleEnv>();
  app.post("/flags/:name/:op{promote|rollback}", async (c) => {
    const form = await c.req.parseBody();
    const name = c.req.param("name");
    const op = c.req.param("op");
    await api(c).post(`/admin/flags/${encodeURIComponent(name)}/canary/${op}`, {
      reason: typeof form.reason === "string" ? form.reason : "",
    });
    return c.redirect(`/console/flags?done=${op}&flag=${encodeURIComponent(name)}`, 303);
  });
  return app;
}
