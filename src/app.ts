import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { adminApiKeysRoutes } from "./api/admin_api_keys.ts";
import { adminControlRoutes } from "./api/admin_control.ts";
import { adminTenantsRoutes } from "./api/admin_tenants.ts";
import { internalControlRoutes } from "./api/internal_control.ts";
import { pluginRoutes } from "./api/plugins.ts";
import type { AuditEntry } from "./control/audit.ts";
import { type DbHealth, isConnectionError, readOnlyError } from "./control/db_health.ts";
import type { ControlStore } from "./control/store.ts";
import type { ControlView } from "./control/view.ts";
import type { KeyStore } from "./keys/keystore.ts";
import { adminByokRoutes } from "./api/admin_byok.ts";
import { adminProvidersRoutes } from "./api/admin_providers.ts";
import { adminStatsRoutes } from "./api/admin_stats.ts";
import { adminLedgerRoutes } from "./api/admin_ledger.ts";
import { forwardToAggregator } from "./api/aggregator_proxy.ts";
import { loginRoutes, sessionRoutes } from "./api/auth_routes.ts";
import { createChatService } from "./api/chat_service.ts";
import type { AppEnv } from "./api/context.ts";
import { internalMeteringRoutes } from "./api/internal_metering.ts";
import { openaiChatRoutes, openaiErrorShape } from "./api/openai_chat.ts";
import { requestContext } from "./api/request_context.ts";
import { usageRoutes } from "./api/usage_routes.ts";
import { v7ChatRoutes } from "./api/v7_chat.ts";
import type { ApiKeyStore } from "./auth/api_keys.ts";
import { bearerAuth } from "./auth/middleware.ts";
import type { RevocationList } from "./auth/revocation.ts";
import type { TokenService } from "./auth/tokens.ts";
import type { Guard } from "./budget/guard.ts";
import type { BudgetStore } from "./budget/store.ts";
import type { Clock } from "./clock.ts";
import type { Config } from "./config.ts";
import type { Sql } from "./db/client.ts";
import {
  CANCELLED_CODE,
  CLIENT_CLOSED,
  GatewayError,
  openaiErrorBody,
  toGatewayError,
  v7ErrorBody,
} from "./errors.ts";
import { usageEventOf } from "./metering/from_request.ts";
import type { UsageEvent } from "./metering/usage_event.ts";
import type { Logger } from "./obs/log.ts";
import type { Metrics } from "./obs/metrics.ts";
import type { FinishedRequest } from "./obs/request_record.ts";
import type { Router } from "./providers/router.ts";
import { chatSocketRoutes } from "./ws/chat_socket.ts";
import type { SessionRegistry } from "./ws/session.ts";
import type { RealtimeAdapter } from "./voice/types.ts";
import { voiceSocketRoutes } from "./voice/voice_socket.ts";
import type { Tracer } from "@opentelemetry/api";
import type { SloEngine } from "./obs/slo.ts";
import { adminSloRoutes } from "./api/admin_slo.ts";
import { consoleRoutes } from "./console/routes.tsx";

/** What the public edge needs. */
export interface EdgeDeps {
  router: Router;
  guard: Guard;
  store: BudgetStore;
  /** Takes each usage event; the batcher in production. */
  meter: (event: UsageEvent) => void;
  /** Live WebSocket sessions, for resume. */
  sessions: SessionRegistry;
  /** Realtime (voice) adapters by provider name. */
  realtime: Record<string, RealtimeAdapter>;
  /** Flags, mitigations and admin-managed settings, as last polled. */
  control: ControlView;
  /** Sends an audit entry to the aggregator's log. */
  audit: (entry: AuditEntry) => void;
}

/** What the central aggregator needs. */
export interface AggregatorDeps {
  sql: Sql;
  apiKeys: ApiKeyStore;
  meteringSecret: string;
  pseudonymKey: string;
  control: ControlStore;
  /** Read-only mode while the database is down. */
  health: DbHealth;
  /** Where tenants' provider keys go. */
  keys: KeyStore;
}

/** Everything the app needs, injected so tests build the real app with fakes. */
export interface AppDeps {
  config: Config;
  clock: Clock;
  log: Logger;
  tokens: TokenService;
  revocations: RevocationList;
  metrics: Metrics;
  tracer: Tracer;
  slo: SloEngine;
  /** Present when the role is edge or all. */
  edge?: EdgeDeps;
  /** Present when the role is aggregator or all. */
  aggregator?: AggregatorDeps;
}

export function createApp(deps: AppDeps): Hono<AppEnv> {
  const { config, clock, log, edge, aggregator, metrics, slo } = deps;
  const requireAuth = bearerAuth(deps.tokens, deps.tracer);
  const app = new Hono<AppEnv>();

  /** Every request ends here exactly once: log line, metrics, SLIs, usage event. */
  const report = (done: FinishedRequest) => {
    const {
      metered,
      started_at: _s,
      streaming,
      provider_ms,
      ttft_ms,
      audio_seconds_in,
      audio_seconds_out,
      ...line
    } = done;
    log.info("request", { ...line, audio_seconds: audio_seconds_in + audio_seconds_out });
    const route = done.route;
    metrics.httpRequests.inc({
      route,
      method: done.method,
      status_class: `${Math.floor(done.status / 100)}xx`,
    });
    metrics.httpDuration.observe({ route, streaming: String(streaming) }, done.latency_ms / 1000);
    if (metered) {
      metrics.overhead.observe({ route }, Math.max(0, done.latency_ms - provider_ms) / 1000);
    }
    slo.record({
      status: done.status,
      latency_ms: done.latency_ms,
      api: route.startsWith("/v1/"),
      chat: metered,
      streaming,
      ttft_ms,
    });
    const event = usageEventOf(done);
    if (!event) return;
    if (event.cost_usd > 0) {
      metrics.tenantCost.inc(
        { tenant: metrics.tenantLabel(event.tenant_id, event.cost_usd), lane: event.lane },
        event.cost_usd,
      );
      metrics.modelCost.inc({ model: event.model ?? "unknown", lane: event.lane }, event.cost_usd);
    }
    edge?.meter(event);
  };

  app.use(requestContext(report, clock, deps.tracer));
  app.use("/v1/chat/completions", openaiErrorShape);
  app.use("/v1/models", openaiErrorShape);
  const limit = bodyLimit({
    maxSize: config.server.max_body_bytes,
    onError: () => {
      throw new GatewayError(
        "request.invalid",
        `request body exceeds ${config.server.max_body_bytes} bytes`,
        { status: 413 },
      );
    },
  });
  app.use("/v1/*", limit);
  app.use("/admin/*", limit);

  app.get("/healthz", (c) => c.json({ status: "ok", role: config.role }));
  app.get("/metrics", async (c) => {
    c.header("content-type", deps.metrics.registry.contentType);
    return c.body(await deps.metrics.registry.metrics());
  });
  app.use("/admin/*", requireAuth);
  app.route("/admin", adminSloRoutes(slo));

  if (edge) {
    const chat = createChatService({
      ...deps,
      router: edge.router,
      guard: edge.guard,
      control: edge.control,
      audit: edge.audit,
    });
    const defaultModel = config.default_model ?? Object.keys(config.models)[0];
    app.route("/v1", sessionRoutes({ ...deps, guard: edge.guard, requireAuth }));
    // Chat requests produce a usage event even when refused after auth.
    app.use("/v1/chat/*", async (c, next) => {
      c.get("record").metered = true;
      await next();
    });
    app.use("/v1/chat/*", requireAuth);
    app.use("/v1/models", requireAuth);
    app.route("/v1", openaiChatRoutes(config, chat, clock));
    app.route("/v1", v7ChatRoutes(chat, defaultModel, clock));
    const socketDeps = { ...deps, ...edge, chat, defaultModel, report };
    app.route("/v1", chatSocketRoutes(socketDeps));
    app.route("/v1", voiceSocketRoutes(socketDeps));
    app.route("/admin", adminProvidersRoutes({ router: edge.router, config }));
  }

  if (aggregator) {
    app.route("/v1", loginRoutes({ ...deps, apiKeys: aggregator.apiKeys }));
    app.use("/v1/usage/*", requireAuth);
    app.route("/v1/usage", usageRoutes({ ...deps, ...aggregator }));
    app.route("/admin", adminLedgerRoutes({ ...deps, ...aggregator }));
    const controlDeps = { ...deps, ...aggregator };
    app.route("/admin", adminControlRoutes(controlDeps));
    app.route("/admin", adminTenantsRoutes(controlDeps));
    app.route("/admin", adminApiKeysRoutes(controlDeps));
    app.route("/admin", adminByokRoutes(controlDeps));
    app.route("/admin", adminStatsRoutes(controlDeps));
    app.route("/console", consoleRoutes({ ...deps, app: () => app }));
    const plugins = pluginRoutes(controlDeps);
    app.use("/v1/plugins", requireAuth);
    app.use("/v1/plugins/*", requireAuth);
    app.route("/v1", plugins.v1);
    app.route("/admin/plugins", plugins.admin);
    app.route(
      "/internal",
      internalControlRoutes({ ...controlDeps, secret: aggregator.meteringSecret }),
    );
    app.route(
      "/internal",
      internalMeteringRoutes({
        ...deps,
        sql: aggregator.sql,
        secret: aggregator.meteringSecret,
        health: aggregator.health,
      }),
    );
  } else {
    const forward = forwardToAggregator(config.metering.aggregator_url!);
    app.post("/v1/auth/login", forward);
    app.all("/v1/usage/*", forward);
    app.all("/v1/plugins", forward);
    app.all("/v1/plugins/*", forward);
    app.all("/admin/*", forward);
  }

  app.notFound((c) => {
    throw new GatewayError("request.invalid", `no route for ${c.req.method} ${c.req.path}`, {
      status: 404,
    });
  });

  app.onError((err, c) => {
    if (c.req.raw.signal.aborted && !(err instanceof GatewayError)) {
      // The client hung up mid-request: nobody reads this answer and it is no
      // server failure, so no 5xx for the SLOs and no "unhandled error" line.
      c.get("record").fields.error_code = CANCELLED_CODE;
      return new Response(null, { status: CLIENT_CLOSED });
    }
    let error = toGatewayError(err);
    if (aggregator && isConnectionError(err)) {
      aggregator.health.markDown(err);
      error = readOnlyError("the ledger database is unreachable; try again shortly");
    }
    const requestId = c.get("requestId") ?? "unknown";
    c.get("record").fields.error_code = error.code;
    if (error.code === "internal" && !(err instanceof GatewayError)) {
      log.error("unhandled error", { request_id: requestId, error: String(err) });
    }
    for (const [name, value] of Object.entries(error.headers)) c.header(name, value);
    const body = c.get("errorShape") === "openai"
      ? openaiErrorBody(error, requestId)
      : v7ErrorBody(error, requestId);
    return c.json(body, error.status as 400);
  });

  return app;
}
