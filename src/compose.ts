import type { Hono } from "hono";
import { base64url } from "jose";
import { type AggregatorDeps, type AppDeps, createApp, type EdgeDeps } from "./app.ts";
import type { AppEnv } from "./api/context.ts";
import { createApiKeyStore } from "./auth/api_keys.ts";
import { loadOrCreateDevSecret, signingSecret } from "./auth/dev_secret.ts";
import { RevocationList } from "./auth/revocation.ts";
import { createTokenService, loadJwks } from "./auth/tokens.ts";
import { createAlertWebhook } from "./budget/alert_webhook.ts";
import { createGuard } from "./budget/guard.ts";
import { MemoryBudgetStore } from "./budget/memory_store.ts";
import { RedisBudgetStore } from "./budget/redis_store.ts";
import type { BudgetStore } from "./budget/store.ts";
import { registerSpendGauges } from "./budget/spend_gauges.ts";
import { type Clock, systemClock } from "./clock.ts";
import type { Config } from "./config.ts";
import { type Database, openDatabase } from "./db/client.ts";
import { migrate } from "./db/migrate.ts";
import { createBatcher } from "./metering/batcher.ts";
import { applyRetention } from "./metering/gdpr.ts";
import { createReconciler } from "./metering/reconcile.ts";
import { Spool } from "./metering/spool.ts";
import type { UsageEvent } from "./metering/usage_event.ts";
import { createLogger, createStdoutSink, type LogSink } from "./obs/log.ts";
import { createMetrics } from "./obs/metrics.ts";
import { SloEngine } from "./obs/slo.ts";
import { SessionRegistry } from "./ws/session.ts";
import { buildRealtimeAdapters } from "./voice/registry.ts";
import { defaultTracer } from "./obs/tracing.ts";
import { ProxyTracerProvider, type Tracer } from "@opentelemetry/api";
import { Gauge } from "prom-client";
import { buildAdapters } from "./providers/registry.ts";
import { createRouter } from "./providers/router.ts";
import type { ProviderAdapter } from "./providers/types.ts";

export interface RuntimeOverrides {
  clock?: Clock;
  logSink?: LogSink;
  /** Replaces configured adapters by provider name. */
  adapters?: Record<string, ProviderAdapter>;
  store?: BudgetStore;
  /** Spans go here instead of the global tracer (tests use an in-memory exporter). */
  tracer?: Tracer;
  /** Takes usage events instead of the batcher (edge tests without an aggregator). */
  meter?: (event: UsageEvent) => void;
}

export interface Runtime {
  deps: AppDeps;
  app: Hono<AppEnv>;
  /** Background work of the roles: spool delivery, reconciliation, retention. */
  batcher?: ReturnType<typeof createBatcher>;
  reconcile?: () => Promise<number>;
  db?: Database;
  /** Graceful stop: flush metering, settle budgets, stop timers, close the database. */
  close(): Promise<void>;
}

async function secretText(
  value: { reveal(): string } | undefined,
  dataDir: string,
  name: string,
): Promise<string> {
  if (value) return value.reveal();
  return base64url.encode(await loadOrCreateDevSecret(dataDir, name));
}

/** Wires the real dependencies of the configured role from config, and builds the app. */
export async function createRuntime(
  config: Config,
  overrides: RuntimeOverrides = {},
): Promise<Runtime> {
  const clock = overrides.clock ?? systemClock;
  const obs = config.observability;
  const stdout = overrides.logSink ? undefined : createStdoutSink();
  const log = createLogger(overrides.logSink ?? stdout!, () => clock.now(), obs.log_level);
  const metrics = createMetrics({
    tenantLabelTopN: obs.tenant_label_top_n,
    now: () => clock.now(),
    enabled: obs.enabled,
  });
  const slo = new SloEngine(obs.slo, () => clock.now());
  slo.register(metrics.registry);
  const tracer = overrides.tracer ??
    // A proxy provider with no delegate yields the API's no-op tracer.
    (obs.enabled ? defaultTracer() : new ProxyTracerProvider().getTracer("off"));
  const secret = await signingSecret(config.auth, config.data_dir);
  const revocations = new RevocationList(clock, config.auth.clock_skew_s * 1000);
  const tokens = createTokenService({
    auth: config.auth,
    secret,
    jwks: await loadJwks(config.auth),
    revocations,
    clock,
  });
  const meteringSecret = await secretText(
    config.metering.secret,
    config.data_dir,
    "metering-secret",
  );
  const timers: Array<ReturnType<typeof setInterval>> = [];
  const closers: Array<() => Promise<void>> = [];

  let aggregator: AggregatorDeps | undefined;
  let db: Database | undefined;
  if (config.role !== "edge") {
    db = await openDatabase(config.database_url?.reveal(), `${config.data_dir}`);
    await migrate(db.sql);
    aggregator = {
      sql: db.sql,
      apiKeys: createApiKeyStore(db.sql),
      meteringSecret,
      pseudonymKey: `${meteringSecret}:pseudonym`,
    };
    const sql = db.sql;
    const retention = () =>
      applyRetention(sql, config.metering.retention_business_months)
        .then((n) => n && log.info("retention: usage events deleted", { rows: n }))
        .catch((err) => log.error("retention failed", { error: (err as Error).message }));
    await retention();
    timers.push(setInterval(retention, config.metering.retention_interval_ms));
  }

  // In one process (role all), edges reach the aggregator through the app
  // itself: the same signed HTTP path, without a socket.
  const self: { app?: Hono<AppEnv> } = {};
  const aggregatorUrl = config.metering.aggregator_url ?? "http://aggregator.internal";
  const toAggregator = config.role === "all" && !config.metering.aggregator_url
    ? (req: Request) => Promise.resolve(self.app!.fetch(req))
    : undefined;

  let edge: EdgeDeps | undefined;
  let batcher: ReturnType<typeof createBatcher> | undefined;
  let reconcile: (() => Promise<number>) | undefined;
  if (config.role !== "aggregator") {
    const store = overrides.store ??
      (config.guardrails.store === "redis"
        ? RedisBudgetStore.fromConfig(config.guardrails.redis)
        : new MemoryBudgetStore(clock));
    const alerts = createAlertWebhook({ url: config.guardrails.alert_webhook_url, log, metrics });
    const guard = createGuard({ config, store, clock, log, metrics, alerts });
    registerSpendGauges(metrics.registry, store, config.guardrails.global_daily_cap_usd, clock);
    let meter = overrides.meter;
    if (!meter) {
      const m = config.metering;
      const spool = await Spool.open({
        maxEvents: m.spool_max_events,
        file: m.spool_file ? `${config.data_dir}/metering-spool.jsonl` : undefined,
        log,
        metrics,
        now: clock.now,
      });
      batcher = createBatcher({
        aggregatorUrl,
        secret: meteringSecret,
        edgeId: crypto.randomUUID(),
        batchSize: m.batch_size,
        flushIntervalMs: m.flush_interval_ms,
        retryBaseMs: m.retry_base_ms,
        retryMaxMs: m.retry_max_ms,
        spool,
        clock,
        log,
        metrics,
        fetch: toAggregator,
      });
      meter = batcher.add;
      const b = batcher;
      closers.push(() => b.close(m.shutdown_flush_ms));
      const reconciler = createReconciler({
        aggregatorUrl,
        secret: meteringSecret,
        store,
        clock,
        log,
        fetch: toAggregator,
      });
      reconcile = reconciler.reconcile;
      let inFlight: Promise<unknown> = Promise.resolve();
      const run = () => {
        inFlight = reconciler.reconcile().catch((err) =>
          log.warn("budget reconciliation skipped", { error: (err as Error).message })
        );
      };
      timers.push(setInterval(run, m.reconcile_interval_ms));
      // At start too, once the app below exists to answer an in-process call.
      queueMicrotask(run);
      closers.push(async () => void await inFlight);
    }
    const sessions = new SessionRegistry({
      replayFrames: config.ws.replay_frames,
      maxBufferedBytes: config.ws.max_buffered_bytes,
      resumeWindowMs: config.ws.resume_window_ms,
    }, clock);
    new Gauge({
      name: "convergio_ws_active_sessions",
      help: "Live WebSocket sessions (attached or within their resume window), by kind.",
      labelNames: ["kind"] as const,
      registers: [metrics.registry],
      collect(this: Gauge) {
        for (const kind of ["chat", "voice"] as const) this.set({ kind }, sessions.count(kind));
      },
    });
    // Sessions end first: their in-flight requests settle before the guard drains.
    closers.unshift(() => sessions.endAll());
    closers.push(() => guard.idle());
    edge = {
      sessions,
      realtime: buildRealtimeAdapters(config),
      router: createRouter({
        config,
        adapters: { ...buildAdapters(config), ...overrides.adapters },
        clock,
      }),
      guard,
      store,
      meter,
    };
  }

  const deps: AppDeps = {
    config,
    clock,
    log,
    tokens,
    revocations,
    metrics,
    tracer,
    slo,
    edge,
    aggregator,
  };
  const app = self.app = createApp(deps);
  return {
    deps,
    app,
    batcher,
    reconcile,
    db,
    async close() {
      for (const t of timers) clearInterval(t);
      for (const close of closers) await close();
      await db?.close();
      stdout?.flush();
    },
  };
}
