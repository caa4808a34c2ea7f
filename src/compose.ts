import type { AppDeps } from "./app.ts";
import { createApiKeyIndex } from "./auth/api_keys.ts";
import { loadOrCreateDevSecret } from "./auth/dev_secret.ts";
import { RevocationList } from "./auth/revocation.ts";
import { createTokenService, loadJwks } from "./auth/tokens.ts";
import { type Clock, systemClock } from "./clock.ts";
import type { Config } from "./config.ts";
import { createLogger, type LogSink } from "./obs/log.ts";
import { buildAdapters } from "./providers/registry.ts";
import { createAlertWebhook } from "./budget/alert_webhook.ts";
import { createGuard } from "./budget/guard.ts";
import { MemoryBudgetStore } from "./budget/memory_store.ts";
import { RedisBudgetStore } from "./budget/redis_store.ts";
import type { BudgetStore } from "./budget/store.ts";
import { createMetrics } from "./obs/metrics.ts";
import { createRouter } from "./providers/router.ts";
import type { ProviderAdapter } from "./providers/types.ts";

export interface ComposeOverrides {
  clock?: Clock;
  logSink?: LogSink;
  /** Replaces configured adapters by provider name. */
  adapters?: Record<string, ProviderAdapter>;
  store?: BudgetStore;
}

/** Wires the real dependencies from config; tests override the clock, logs or adapters. */
export async function composeDeps(
  config: Config,
  overrides: ComposeOverrides = {},
): Promise<AppDeps> {
  const clock = overrides.clock ?? systemClock;
  const log = createLogger(overrides.logSink ?? console.log, () => clock.now());
  const secret = config.auth.jwt_secret
    ? new TextEncoder().encode(config.auth.jwt_secret.reveal())
    : await loadOrCreateDevSecret(config.data_dir);
  const revocations = new RevocationList(clock, config.auth.clock_skew_s * 1000);
  const tokens = createTokenService({
    auth: config.auth,
    secret,
    jwks: await loadJwks(config.auth),
    revocations,
    clock,
  });
  const adapters = { ...buildAdapters(config), ...overrides.adapters };
  const metrics = createMetrics();
  const store = overrides.store ??
    (config.guardrails.store === "redis"
      ? RedisBudgetStore.fromConfig(config.guardrails.redis)
      : new MemoryBudgetStore(clock));
  const alerts = createAlertWebhook({ url: config.guardrails.alert_webhook_url, log, metrics });
  return {
    config,
    clock,
    log,
    tokens,
    revocations,
    apiKeys: createApiKeyIndex(config.auth.api_keys),
    router: createRouter({ config, adapters, clock }),
    guard: createGuard({ config, store, clock, log, metrics, alerts }),
    store,
    metrics,
  };
}
