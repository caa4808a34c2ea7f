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
import { LocalAdmission } from "./budget/local_admission.ts";
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
import { signBody } from "./metering/signature.ts";
import { createLogger, createStdoutSink, type LogSink } from "./obs/log.ts";
import { createMetrics } from "./obs/metrics.ts";
import { SloEngine } from "./obs/slo.ts";
import { SessionRegistry } from "./ws/session.ts";
import { buildRealtimeAdapters } from "./voice/registry.ts";
import { defaultTracer } from "./obs/tracing.ts";
import { ProxyTracerProvider, type Tracer } from "@opentelemetry/api";
import { Gauge } from "prom-client";
import { buildAdapters } from "./providers/registry.ts";
import { createAutopilot } from "./control/autopilot.ts";
import { DbHealth } from "./control/db_health.ts";
import type { ControlSnapshot } from "./control/snapshot.ts";
import { createControlStore } from "./control/store.ts";
import { type ControlSync, createControlSync } from "./control/sync.ts";
import { ControlView } from "./control/view.ts";
import { keyStoreFromConfig } from "./keys/from_config.ts";
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
  /** A fixed control snapshot instead of polling the aggregator (edge tests without one). */
  control?: ControlSnapshot;
}

export interface Runtime {
  deps: AppDeps;
  app: Hono<AppEnv>;
  /** Background work of the roles: spool delivery, reconciliation, retention. */
  batcher?: ReturnType<typeof createBatcher>;
  reconcile?: () => Promise<number>;
  db?: Database;
  /** The edge's control-plane poller, when it has an aggregator to poll. */
  controlSync?: ControlSync;
  autopilot?: ReturnType<typeof createAutopilot>;
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
  const edgeId = crypto.randomUUID();
  const keys = await keyStoreFromConfig(config);
  const closers: Array<() => Promise<void>> = [];

  let aggregator: AggregatorDeps | undefined;
  let db: Database | undefined;
  if (config.role !== "edge") {
    db = await openDatabase(config.database_url?.reveal(), `${config.data_dir}`);
    await migrate(db.sql);
    const health = new DbHealth({
      sql: db.sql,
      log,
      metrics,
      probeMs: config.control.db_probe_ms,
    });
    closers.push(() => Promise.resolve(health.close()));
    aggregator = {
      sql: db.sql,
      apiKeys: createApiKeyStore(db.sql),
      meteringSecret,
      pseudonymKey: `${meteringSecret}:pseudonym`,
      health,
      keys,
      control: createControlStore({
        sql: db.sql,
        clock,
        log,
        health,
        cacheMs: config.control.snapshot_cache_ms,
      }),
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
  let controlSync: ControlSync | undefined;
  let autopilot: ReturnType<typeof createAutopilot> | undefined;
  if (config.role !== "aggregator") {
    const control = new ControlView(config, overrides.control);
    const store = overrides.store ?? sharedOrEmbeddedStore(config, clock);
    const alerts = createAlertWebhook({ url: config.guardrails.alert_webhook_url, log, metrics });
    const guard = createGuard({ config, store, clock, log, metrics, alerts, control });
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
        edgeId,
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
    const isolated = overrides.control || overrides.meter;
    if (!isolated) {
      const sync = controlSync = createControlSync({
        aggregatorUrl,
        secret: meteringSecret,
        view: control,
        store,
        clock,
        log,
        metrics,
        fetch: toAggregator,
        keys,
      });
      let polling: Promise<unknown> = Promise.resolve();
      timers.push(setInterval(() => (polling = sync.refresh()), config.control.poll_interval_ms));
      closers.push(async () => {
        await polling;
        await sync.flushAudit();
      });
      // In one process, an admin change reaches this edge at once.
      aggregator?.control.onChange(() => sync.refresh());
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
    const router = createRouter({
      config,
      adapters: { ...buildAdapters(config), ...overrides.adapters },
      clock,
    });
    if (controlSync) {
      const sync = controlSync;
      autopilot = createAutopilot({
        config: config.control.autopilot,
        view: control,
        clock,
        log,
        metrics,
        store,
        globalDailyCapUsd: config.guardrails.global_daily_cap_usd,
        providerCounts: () => {
          const byProvider: Record<string, { bad: number; total: number }> = {};
          for (const [key, c] of Object.entries(router.counters())) {
            const p = byProvider[key.split("/")[0]] ??= { bad: 0, total: 0 };
            p.bad += c.errors;
            p.total += c.attempts;
          }
          return byProvider;
        },
        voiceCounts: async () => {
          const sum = async (
            m: {
              get(): Promise<{ values: Array<{ value: number; labels: Record<string, unknown> }> }>;
            },
          ) =>
            (await m.get()).values.filter((v) => v.labels.kind === "voice")
              .reduce((n, v) => n + v.value, 0);
          return { bad: await sum(metrics.wsDropouts), total: await sum(metrics.wsSessions) };
        },
        send: async (action) => {
          const body = JSON.stringify({ edge_id: edgeId, ...action });
          const req = new Request(
            `${aggregatorUrl.replace(/\/+$/, "")}/internal/control/autopilot`,
            {
              method: "POST",
              body,
              headers: {
                "content-type": "application/json",
                "x-convergio-signature": await signBody(meteringSecret, body, clock.now()),
              },
            },
          );
          const res = await (toAggregator ?? fetch)(req);
          if (!res.ok) throw new Error(`autopilot answered ${res.status}: ${await res.text()}`);
          await res.body?.cancel();
          await sync.refresh();
        },
      });
      const pilot = autopilot;
      const c = config.control.autopilot;
      if (c.provider_failover.enabled || c.spend_downgrade.enabled || c.voice_text.enabled) {
        timers.push(setInterval(() => void pilot.tick(), c.interval_ms));
      }
    }
    edge = {
      control,
      audit: controlSync ? controlSync.audit : (entry) => log.warn("audit (no aggregator)", entry),
      sessions,
      realtime: buildRealtimeAdapters(config),
      router,
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
  // Never throws: without an aggregator the edge starts on config alone and keeps polling.
  await controlSync?.refresh();
  return {
    deps,
    app,
    batcher,
    reconcile,
    db,
    controlSync,
    autopilot,
    async close() {
      for (const t of timers) clearInterval(t);
      for (const close of closers) await close();
      await db?.close();
      stdout?.flush();
    },
  };
}

/** The embedded store, or Redis behind local admission unless that is turned off. */
function sharedOrEmbeddedStore(config: Config, clock: Clock): BudgetStore {
  const g = config.guardrails;
  if (g.store !== "redis") return new MemoryBudgetStore(clock);
  const redis = RedisBudgetStore.fromConfig(g.redis);
  const local = g.local_admission;
  if (!local.enabled) return redis;
  return new LocalAdmission(redis, {
    clock,
    freshMs: local.fresh_ms,
    maxInFlight: local.max_in_flight,
  });
}
