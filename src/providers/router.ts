import { own } from "../record.ts";
import type { Clock } from "../clock.ts";
import type { Config, Mode, ModelConfig } from "../config.ts";
import { GatewayError } from "../errors.ts";
import { createMetrics, type Metrics } from "../obs/metrics.ts";
import type { Secret } from "../secret.ts";
import { CircuitBreaker } from "./breaker.ts";
import type { ChatRequest } from "./chat_schema.ts";
import { sleep } from "./sleep.ts";
import type { RoutePolicy } from "../control/route_policy.ts";
import {
  type ChatResult,
  type ProviderAdapter,
  ProviderError,
  type ProviderEvent,
  type UpstreamCall,
} from "./types.ts";

/** Marks an abort the router caused itself, so it is told apart from a client cancel. */
class AttemptTimeout extends Error {
  constructor(readonly phase: "first_byte" | "total") {
    super(`upstream ${phase === "first_byte" ? "first byte" : "total"} timeout`);
  }
}

export interface RouteParams {
  alias: string;
  model: ModelConfig;
  request: ChatRequest;
  mode: Mode;
  tenantId: string;
  /** Aborts when the client goes away. */
  signal: AbortSignal;
  /** Deployment order from the routing flag and mitigations; priority when absent. */
  policy?: RoutePolicy;
}

export interface Routed {
  provider: string;
  deployment: string;
  /** Attempts made, including the one that succeeded. */
  attempts: number;
}

export interface RoutedStream extends Routed {
  events: AsyncIterable<ProviderEvent>;
}

export interface DeploymentCounters {
  attempts: number;
  errors: number;
  /** Times this deployment failed and the request moved on to another attempt. */
  failovers: number;
}

interface Target {
  provider: string;
  deployment: string;
  adapter: ProviderAdapter;
  apiKey?: Secret;
  breaker: CircuitBreaker;
}

export interface RouterDeps {
  config: Config;
  adapters: Record<string, ProviderAdapter>;
  clock: Clock;
  /** Where attempts and failovers are exported; a private registry when absent. */
  metrics?: Metrics;
  random?: () => number;
}

function finalError(err: unknown, mode: Mode): GatewayError {
  if (err instanceof GatewayError) return err;
  const kind = err instanceof ProviderError ? err.kind : "server";
  const detail = err instanceof Error ? err.message : String(err);
  if (kind === "timeout") {
    return new GatewayError("provider.timeout", `provider timed out: ${detail}`);
  }
  if (kind === "rate_limited") {
    return new GatewayError("provider.rate_limited", `provider rate limited: ${detail}`);
  }
  if (kind === "auth" && mode === "byok") {
    return new GatewayError("byok.missing_key", "the provider rejected the tenant's key");
  }
  return new GatewayError("provider.unavailable", `no provider could serve the request: ${detail}`);
}

/**
 * Maps a model alias to its ordered deployments and fails over between them
 * until the first byte reaches the client, with bounded, jittered retries and
 * a circuit breaker per deployment.
 */
export function createRouter(deps: RouterDeps) {
  const { config, adapters, clock } = deps;
  const random = deps.random ?? Math.random;
  const metrics = deps.metrics ?? createMetrics();
  const opts = config.routing;
  const breakers = new Map<string, CircuitBreaker>();
  const counters = new Map<string, DeploymentCounters>();

  const counterFor = (key: string) => {
    let c = counters.get(key);
    if (!c) counters.set(key, c = { attempts: 0, errors: 0, failovers: 0 });
    return c;
  };

  /** The alias's deployments in the order the policy asks for (a stable sort keeps priority ties). */
  function ordered(p: RouteParams): ModelConfig["deployments"] {
    const policy = p.policy;
    let list = p.model.deployments;
    if (!policy) return list;
    if (policy.force) {
      const forced = list.filter((d) => d.provider === policy.force);
      if (forced.length) list = forced;
    }
    if (policy.order === "cheapest") {
      const cost = (d: (typeof list)[number]) => {
        const price = d.cost ?? p.model.price;
        return price.input_per_1m + price.output_per_1m;
      };
      list = [...list].sort((a, b) => cost(a) - cost(b));
    }
    if (policy.avoid) {
      list = [
        ...list.filter((d) => d.provider !== policy.avoid),
        ...list.filter((d) => d.provider === policy.avoid),
      ];
    }
    return list;
  }

  function targets(p: RouteParams): Target[] {
    const byok = own(config.tenants, p.tenantId)?.byok_keys ?? {};
    const out: Target[] = [];
    for (const d of ordered(p)) {
      const adapter = adapters[d.provider];
      const provider = config.providers[d.provider];
      const apiKey = p.mode === "byok"
        ? byok[d.provider]
        : "api_key" in provider
        ? provider.api_key
        : undefined;
      if (adapter.needsKey && !apiKey) continue;
      const key = `${d.provider}/${d.model}`;
      let breaker = breakers.get(key);
      if (!breaker) breakers.set(key, breaker = new CircuitBreaker(opts.breaker, clock));
      out.push({ provider: d.provider, deployment: d.model, adapter, apiKey, breaker });
    }
    if (out.length === 0) {
      throw p.mode === "byok"
        ? new GatewayError(
          "byok.missing_key",
          `tenant ${p.tenantId} has no provider key for model ${p.alias}`,
        )
        : new GatewayError("provider.unavailable", `no house key configured for model ${p.alias}`);
    }
    return out;
  }

  /**
   * Runs `exec` against deployments in order until one succeeds. The attempt's
   * signal enforces the total timeout and, for streams until `exec` calls
   * `firstByte`, the first-byte timeout. (A non-streamed answer arrives whole,
   * so only the total applies.) The returned `release` must be called when the
   * call is over, to stop the total-timeout timer.
   */
  async function attempt<T>(
    p: RouteParams,
    streaming: boolean,
    exec: (t: Target, call: UpstreamCall, firstByte: () => void) => Promise<T>,
  ): Promise<{ value: T; target: Target; attempts: number; release: () => void }> {
    const list = targets(p);
    let lastErr: unknown;
    let prev: Target | undefined;
    /** Deployments that refused the tenant's own key: not tried again for this request. */
    const refusedKey = new Set<Target>();
    for (let n = 0; n < opts.max_attempts; n++) {
      const target = list.map((_, i) => list[(n + i) % list.length]).find((t) =>
        !refusedKey.has(t) && t.breaker.tryAcquire()
      );
      if (!target) break;
      if (prev) {
        counterFor(`${prev.provider}/${prev.deployment}`).failovers++;
        metrics.providerFailovers.inc({ provider: prev.provider, deployment: prev.deployment });
        await sleep(opts.backoff_ms * 2 ** (n - 1) * (0.5 + random() / 2), p.signal);
      }
      prev = target;
      const stats = counterFor(`${target.provider}/${target.deployment}`);
      stats.attempts++;
      const ctrl = new AbortController();
      const onClientAbort = () => ctrl.abort(p.signal.reason);
      p.signal.addEventListener("abort", onClientAbort, { once: true });
      const total = setTimeout(() => ctrl.abort(new AttemptTimeout("total")), opts.timeout_ms);
      const firstByteTimer = streaming
        ? setTimeout(() => ctrl.abort(new AttemptTimeout("first_byte")), opts.first_byte_timeout_ms)
        : undefined;
      const release = () => {
        clearTimeout(total);
        clearTimeout(firstByteTimer);
        p.signal.removeEventListener("abort", onClientAbort);
      };
      const call: UpstreamCall = {
        request: { ...p.request, model: target.deployment },
        maxOutputTokens: p.model.max_output_tokens,
        apiKey: target.apiKey,
        signal: ctrl.signal,
      };
      try {
        const value = await exec(target, call, () => clearTimeout(firstByteTimer));
        target.breaker.onSuccess();
        metrics.providerAttempts.inc({
          provider: target.provider,
          deployment: target.deployment,
          outcome: "ok",
        });
        return { value, target, attempts: n + 1, release };
      } catch (err) {
        release();
        if (p.signal.aborted) throw p.signal.reason;
        const failure = err instanceof AttemptTimeout
          ? new ProviderError("timeout", err.message)
          : err;
        // A tenant's bad key says nothing about the deployment's health: no breaker
        // failure (which would cut every tenant off), and no retry with the same key.
        if (failure instanceof ProviderError && failure.kind === "auth" && p.mode === "byok") {
          target.breaker.onSuccess();
          refusedKey.add(target);
          lastErr = failure;
          continue;
        }
        if (failure instanceof ProviderError && failure.kind === "client") {
          target.breaker.onSuccess();
          throw new GatewayError(
            "request.invalid",
            `provider rejected the request: ${failure.message}`,
          );
        }
        stats.errors++;
        metrics.providerAttempts.inc({
          provider: target.provider,
          deployment: target.deployment,
          outcome: "error",
        });
        target.breaker.onFailure();
        lastErr = failure;
      }
    }
    // Built only on failure: an Error captures a stack, too costly per request.
    throw finalError(
      lastErr ?? new ProviderError("server", "every deployment's circuit is open"),
      p.mode,
    );
  }

  async function complete(p: RouteParams): Promise<Routed & { result: ChatResult }> {
    const r = await attempt(p, false, (t, call) => t.adapter.complete(call));
    r.release();
    return {
      result: r.value,
      provider: r.target.provider,
      deployment: r.target.deployment,
      attempts: r.attempts,
    };
  }

  async function stream(p: RouteParams): Promise<RoutedStream> {
    const r = await attempt(p, true, async (t, call, firstByte) => {
      const it = t.adapter.stream(call)[Symbol.asyncIterator]();
      const first = await it.next();
      firstByte();
      return { it, first };
    });
    const { it, first } = r.value;
    async function* events(): AsyncGenerator<ProviderEvent> {
      try {
        if (first.done) throw new ProviderError("server", "upstream stream was empty");
        yield first.value;
        while (true) {
          const next = await it.next();
          if (next.done) return;
          yield next.value;
        }
      } catch (err) {
        if (p.signal.aborted) throw p.signal.reason;
        throw finalError(
          err instanceof AttemptTimeout ? new ProviderError("timeout", err.message) : err,
          p.mode,
        );
      } finally {
        r.release();
        await it.return?.();
      }
    }
    return {
      events: events(),
      provider: r.target.provider,
      deployment: r.target.deployment,
      attempts: r.attempts,
    };
  }

  return {
    complete,
    stream,
    /** A copy of the per-deployment counters, keyed `provider/deployment`. */
    counters: (): Record<string, DeploymentCounters> =>
      Object.fromEntries([...counters].map(([k, v]) => [k, { ...v }])),
    breakerState: (provider: string, deployment: string) =>
      breakers.get(`${provider}/${deployment}`)?.state ?? "closed",
  };
}

export type Router = ReturnType<typeof createRouter>;
