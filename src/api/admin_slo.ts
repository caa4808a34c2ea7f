import { Hono } from "hono";
import { requireRole } from "../auth/roles.ts";
import type { SloEngine } from "../obs/slo.ts";
import type { AppEnv } from "./context.ts";

/** `GET /admin/slo`: SLIs, error budgets, burn rates and the budget alert, for operators. */
export function adminSloRoutes(slo: SloEngine) {
  const app = new Hono<AppEnv>();
  app.get(
    "/slo",
    requireRole("admin"),
    (c) => c.json({ targets: slo.targets, slos: slo.report(), request_id: c.var.requestId }),
  );
  return app;
}
