import { type Context, Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import type { TokenService } from "../auth/tokens.ts";
import type { Clock } from "../clock.ts";
import type { Logger } from "../obs/log.ts";
import { actionRoutes } from "./actions.ts";
import { apiClient, ApiError, type Fetcher } from "./api_client.ts";
import { assetRoutes } from "./assets.ts";
import { downloadRoutes } from "./downloads.ts";
import { Layout } from "./layout.tsx";
import type { View } from "./page.ts";
import { sameOrigin, securityHeaders } from "./security.ts";
import {
  type ConsoleEnv,
  endSession,
  loginUrl,
  requireSession,
  safeNext,
  startSession,
} from "./session.ts";
import { auditView } from "./views/audit.tsx";
import { budgetsView } from "./views/budgets.tsx";
import { errorsView } from "./views/errors.tsx";
import { flagsView } from "./views/flags.tsx";
import { latencyView } from "./views/latency.tsx";
import { LoginPage } from "./views/login.tsx";
import { mitigationsView } from "./views/mitigations.tsx";
import { DeniedPage, ErrorPage } from "./views/refusal.tsx";
import { sloView } from "./views/slo.tsx";
import { spendView } from "./views/spend.tsx";
import { tenantView } from "./views/tenant.tsx";

export interface ConsoleDeps {
  /** The gateway app itself: every page reads through its API. */
  app: () => Fetcher;
  tokens: TokenService;
  clock: Clock;
  log: Logger;
}

const VIEWS: Record<string, View> = {
  slo: sloView,
  latency: latencyView,
  errors: errorsView,
  spend: spendView,
  budgets: budgetsView,
  flags: flagsView,
  mitigations: mitigationsView,
  audit: auditView,
  tenant: tenantView,
};

const MAX_FORM_BYTES = 64 * 1024;

/**
 * The operator and tenant console under /console: server-rendered pages over
 * the gateway's own admin and usage APIs, called in-process with the JWT
 * from the session cookie.
 */
export function consoleRoutes(deps: ConsoleDeps) {
  const app = new Hono<ConsoleEnv>();
  const api = (c: Context<ConsoleEnv>) =>
    apiClient(deps.app, new URL(c.req.url).origin, c.get("jwt"), c.get("requestId"));
  const session = requireSession(deps.tokens);

  app.use("*", securityHeaders);
  app.route("/", assetRoutes());
  app.post(
    "*",
    async (c, next) => {
      if (!sameOrigin(c)) {
        return c.html(
          <ErrorPage title="Request refused" status={403} message="it came from another site" />,
          403,
        );
      }
      await next();
    },
    bodyLimit({ maxSize: MAX_FORM_BYTES, onError: (c) => c.text("form too large", 413) }),
  );

  app.get("/login", (c) => c.html(<LoginPage next={safeNext(c.req.query("next"))} />));
  app.post("/login", async (c) => {
    const form = await c.req.parseBody();
    const field = (name: string) => typeof form[name] === "string" ? form[name].trim() : "";
    const next = safeNext(field("next"));
    const refuse = (error: string, status: 400 | 401) =>
      c.html(<LoginPage next={next} error={error} />, status);
    let jwt = field("token");
    if (field("api_key")) {
      const login = apiClient(deps.app, new URL(c.req.url).origin);
      try {
        ({ access_token: jwt } = await login.post<{ access_token: string }>("/v1/auth/login", {
          api_key: field("api_key"),
        }));
      } catch (err) {
        if (err instanceof ApiError && err.status < 500) {
          return refuse("That API key is unknown or revoked.", 401);
        }
        throw err;
      }
    } else if (!jwt) {
      return refuse("Enter an API key or paste a token.", 400);
    }
    const principal = await deps.tokens.verify(jwt).catch(() => undefined);
    if (!principal) return refuse("That token is not valid: expired, revoked or malformed.", 401);
    startSession(c, jwt, principal.exp, deps.clock);
    return c.redirect(next, 303);
  });
  app.post("/logout", (c) => {
    endSession(c);
    return c.redirect("/console/login", 303);
  });

  app.get("/", session, (c) => {
    const roles = c.var.principal.roles;
    if (roles.includes("admin")) return c.redirect("/console/slo", 303);
    if (roles.includes("tenant_admin")) return c.redirect("/console/tenant", 303);
    throw new ApiError(403, "auth.forbidden", "the console is for admins and tenant admins");
  });
  for (const [name, view] of Object.entries(VIEWS)) {
    app.get(`/${name}`, session, async (c) => {
      const page = await view({
        api: api(c),
        principal: c.var.principal,
        clock: deps.clock,
        query: (q) => c.req.query(q),
      });
      return c.html(
        <Layout title={page.title} section={page.section} principal={c.var.principal}>
          {page.body}
        </Layout>,
      );
    });
  }
  app.use("/actions/*", session);
  app.route("/actions", actionRoutes(api));
  app.use("/download/*", session);
  app.route("/download", downloadRoutes(api));

  app.all("*", (c) => {
    const here = new URL(c.req.url);
    if (c.req.method === "GET" && here.pathname.endsWith("/")) {
      // A relative redirect, so a TLS-terminating proxy's https survives it.
      return c.redirect(here.pathname.replace(/\/+$/, "") + here.search, 301);
    }
    return c.html(
      <ErrorPage title="Not found" status={404} message={`no console page at ${c.req.path}`} />,
      404,
    );
  });

  app.onError((err, c) => {
    const principal = c.var.principal;
    if (!(err instanceof ApiError)) {
      deps.log.error("console error", { request_id: c.var.requestId, error: String(err) });
      return c.html(
        <ErrorPage title="Something went wrong" status={500} message="see the gateway log" />,
        500,
      );
    }
    if (err.status === 401) {
      endSession(c);
      return c.redirect(loginUrl(c), 303);
    }
    if (err.status === 403) {
      return c.html(<DeniedPage principal={principal} message={err.message} />, 403);
    }
    return c.html(
      <ErrorPage
        principal={principal}
        title="Request failed"
        status={err.status}
        message={err.message}
      />,
      err.status as 400,
    );
  });

  return app;
}
