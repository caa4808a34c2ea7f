import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { authRoutes } from "./api/auth_routes.ts";
import { createChatService } from "./api/chat_service.ts";
import type { AppEnv } from "./api/context.ts";
import { openaiChatRoutes, openaiErrorShape } from "./api/openai_chat.ts";
import { requestContext } from "./api/request_context.ts";
import { v7ChatRoutes } from "./api/v7_chat.ts";
import type { ApiKeyIndex } from "./auth/api_keys.ts";
import { bearerAuth } from "./auth/middleware.ts";
import type { RevocationList } from "./auth/revocation.ts";
import type { TokenService } from "./auth/tokens.ts";
import type { Clock } from "./clock.ts";
import type { Config } from "./config.ts";
import { GatewayError, openaiErrorBody, toGatewayError, v7ErrorBody } from "./errors.ts";
import type { Logger } from "./obs/log.ts";
import type { Router } from "./providers/router.ts";
import type { Guard } from "./budget/guard.ts";
import type { BudgetStore } from "./budget/store.ts";
import type { Metrics } from "./obs/metrics.ts";
import { adminBudgetRoutes } from "./api/admin_budget.ts";

/** Everything the app needs, injected so tests build the real app with fakes. */
export interface AppDeps {
  config: Config;
  clock: Clock;
  log: Logger;
  tokens: TokenService;
  revocations: RevocationList;
  apiKeys: ApiKeyIndex;
  router: Router;
  guard: Guard;
  store: BudgetStore;
  metrics: Metrics;
}

export function createApp(deps: AppDeps): Hono<AppEnv> {
  const { config, clock, log } = deps;
  const chat = createChatService(config, deps.router, deps.guard);
  const requireAuth = bearerAuth(deps.tokens);
  const defaultModel = config.default_model ?? Object.keys(config.models)[0];
  const app = new Hono<AppEnv>();

  app.use(requestContext(log, clock));
  app.use("/v1/chat/completions", openaiErrorShape);
  app.use("/v1/models", openaiErrorShape);
  app.use(
    bodyLimit({
      maxSize: config.server.max_body_bytes,
      onError: () => {
        throw new GatewayError(
          "request.invalid",
          `request body exceeds ${config.server.max_body_bytes} bytes`,
          { status: 413 },
        );
      },
    }),
  );

  app.get("/healthz", (c) => c.json({ status: "ok" }));
  app.get("/metrics", async (c) => {
    c.header("content-type", deps.metrics.registry.contentType);
    return c.body(await deps.metrics.registry.metrics());
  });
  app.route("/v1", authRoutes({ ...deps, requireAuth }));
  app.use("/v1/chat/*", requireAuth);
  app.use("/v1/models", requireAuth);
  app.route("/v1", openaiChatRoutes(config, chat, clock));
  app.route("/v1", v7ChatRoutes(chat, defaultModel, clock));
  app.use("/admin/*", requireAuth);
  app.route("/admin", adminBudgetRoutes(deps));

  app.notFound((c) => {
    throw new GatewayError("request.invalid", `no route for ${c.req.method} ${c.req.path}`, {
      status: 404,
    });
  });

  app.onError((err, c) => {
    const error = toGatewayError(err);
    const requestId = c.var.requestId ?? "unknown";
    c.var.record.fields.error_code = error.code;
    if (error.code === "internal" && !(err instanceof GatewayError)) {
      log.error("unhandled error", { request_id: requestId, error: String(err) });
    }
    for (const [name, value] of Object.entries(error.headers)) c.header(name, value);
    const body = c.var.errorShape === "openai"
      ? openaiErrorBody(error, requestId)
      : v7ErrorBody(error, requestId);
    return c.json(body, error.status as 400);
  });

  return app;
}
