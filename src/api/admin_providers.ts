import { Hono } from "hono";
import { requireRole } from "../auth/roles.ts";
import type { Config } from "../config.ts";
import type { Router } from "../providers/router.ts";
import type { AppEnv } from "./context.ts";

/**
 * Provider health as this edge sees it: attempts, errors and failovers per
 * deployment since start, and each circuit breaker's state.
 */
export function adminProvidersRoutes(deps: { router: Router; config: Config }) {
  const app = new Hono<AppEnv>();
  app.get("/providers", requireRole("admin"), (c) => {
    const counters = deps.router.counters();
    const deployments = Object.entries(deps.config.models).flatMap(([alias, m]) =>
      m.deployments.map((d) => {
        const key = `${d.provider}/${d.model}`;
        const n = counters[key] ?? { attempts: 0, errors: 0, failovers: 0 };
        return {
          alias,
          provider: d.provider,
          deployment: d.model,
          ...n,
          error_ratio: n.attempts ? n.errors / n.attempts : 0,
          breaker: deps.router.breakerState(d.provider, d.model),
        };
      })
    );
    return c.json({ deployments, request_id: c.var.requestId });
  });
  return app;
}
