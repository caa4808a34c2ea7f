import type { Principal } from "../auth/principal.ts";
import type { Clock } from "../clock.ts";
import type { Config, ModelConfig } from "../config.ts";
import { GatewayError } from "../errors.ts";
import type { Logger } from "../obs/log.ts";
import type { Metrics } from "../obs/metrics.ts";
import type { ChatRequest } from "../providers/chat_schema.ts";
import { estimatePromptTokens } from "../providers/token_estimate.ts";
import type { TokenUsage } from "../providers/types.ts";
import type { AlertWebhook } from "./alert_webhook.ts";
import { ControlView } from "../control/view.ts";
import { downgradeModel, tenantLimits } from "./limits.ts";
import {
  type AdmitResult,
  type BudgetStore,
  type Periods,
  periodsAt,
  type RateState,
  requestScopes,
  StoreUnavailable,
  THRESHOLDS,
  usdToMicro,
} from "./store.ts";

export interface GuardDeps {
  config: Config;
  store: BudgetStore;
  clock: Clock;
  log: Logger;
  metrics: Metrics;
  alerts: AlertWebhook;
  /** Flags and mitigations: shadow metering, enforced downgrade, the new-tenant block. */
  control?: ControlView;
}

/** What admission decided for one request. */
export interface Admission {
  /** The alias to serve: the requested one, or the tenant's downgrade model. */
  alias: string;
  downgradedFrom?: string;
  /** OpenAI-style rate-limit headers for the response. */
  headers: Record<string, string>;
  /**
   * Settles the reservation to actual usage (null: nothing was produced, so
   * release it). Runs in the background; call exactly once.
   */
  settle(usage: TokenUsage | null): void;
}

/** Cost in micro-dollars, rounded up so that a reservation never undershoots. */
function costMicro(price: ModelConfig["price"], input: number, output: number): number {
  return Math.ceil(input * price.input_per_1m + output * price.output_per_1m);
}

/** OpenAI's reset format: "20ms", "1.5s", "6m0s". */
export function formatReset(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  const minutes = Math.floor(ms / 60_000);
  const seconds = Number(((ms % 60_000) / 1000).toFixed(3));
  return minutes ? `${minutes}m${seconds}s` : `${seconds}s`;
}

export function rateHeaders(rate: RateState): Record<string, string> {
  return {
    "x-ratelimit-limit-requests": String(rate.requests.limit),
    "x-ratelimit-remaining-requests": String(rate.requests.remaining),
    "x-ratelimit-reset-requests": formatReset(rate.requests.reset_ms),
    "x-ratelimit-limit-tokens": String(rate.tokens.limit),
    "x-ratelimit-remaining-tokens": String(rate.tokens.remaining),
    "x-ratelimit-reset-tokens": formatReset(rate.tokens.reset_ms),
  };
}

/**
 * The one guard every chat request passes through before any provider call,
 * whatever its route or transport: burst limits in both lanes, and spend
 * budgets with alert, downgrade and block in the managed lane.
 */
export function createGuard(deps: GuardDeps) {
  const { config, store, clock, log, metrics, alerts } = deps;
  const control = deps.control ?? new ControlView(config);

  /** RB-3: tenants created since the block began (or unknown to config and admin API). */
  function blockedAsNew(tenant: string): boolean {
    const block = control.mitigation("block_new_managed_tenants");
    if (!block || control.inConfigFile(tenant)) return false;
    const created = control.createdAt(tenant);
    if (created !== undefined) return created >= Date.parse(block.since);
    return !control.isKnownTenant(tenant);
  }
  const pending = new Set<Promise<void>>();

  function track(p: Promise<void>) {
    const tracked = p.finally(() => pending.delete(tracked));
    pending.add(tracked);
  }

  function unguarded(p: Principal, op: string, err: StoreUnavailable, alias: string): Admission {
    const policy = config.guardrails.failure_policy[p.mode];
    metrics.budgetStoreErrors.inc({ op, lane: p.mode, policy });
    log.error("budget store unavailable", {
      tenant_id: p.tenant_id,
      lane: p.mode,
      policy,
      error: err.message,
    });
    if (policy === "closed") {
      throw new GatewayError("internal", "budget store unavailable; try again shortly", {
        status: 503,
        retryable: true,
        cause: err,
      });
    }
    return { alias, headers: {}, settle: () => {} };
  }

  /** The 80% alerts an admission (or a later charge) raised: metric, log line and webhook. */
  function raiseAlerts(
    p: Principal,
    periods: Periods,
    result: { alerts: Array<"day" | "month">; fraction: number },
  ) {
    for (const period of result.alerts) {
      metrics.guardrailActions.inc({ action: "alert", lane: p.mode });
      log.warn("budget alert", {
        tenant_id: p.tenant_id,
        period,
        fraction: result.fraction,
        threshold: THRESHOLDS.alert,
      });
      alerts.send({
        type: "budget.alert",
        tenant_id: p.tenant_id,
        period,
        bucket: periods[period],
        fraction: result.fraction,
        threshold: THRESHOLDS.alert,
        at: new Date(clock.now()).toISOString(),
      });
    }
  }

  async function admit(p: Principal, request: ChatRequest, alias: string): Promise<Admission> {
    const model = config.models[alias];
    const limits = tenantLimits(config, p.tenant_id);
    const periods = periodsAt(clock.now());
    const prompt = estimatePromptTokens(request);
    const maxOut = request.max_completion_tokens ?? request.max_tokens ?? model.max_output_tokens;
    const managed = p.mode === "managed";
    if (managed && blockedAsNew(p.tenant_id)) {
      metrics.guardrailActions.inc({ action: "block_new_tenant", lane: "managed" });
      throw new GatewayError(
        "feature.disabled",
        "the managed lane is closed to new tenants for now; BYOK requests still work",
      );
    }
    const downAlias = downgradeModel(config, p.tenant_id);
    const down = downAlias && downAlias !== alias ? config.models[downAlias] : undefined;
    // Shadow metering counts and reserves spend but never blocks or downgrades.
    const shadow = managed && control.flag("metering_mode", p.tenant_id) === "shadow";
    const forceDown = managed && !!down && !!control.mitigation("enforce_downgrade");
    const budget = (usd: number) => (shadow ? 0 : usdToMicro(usd));
    const worst = (m: ModelConfig) =>
      costMicro(m.price, prompt, Math.min(maxOut, m.max_output_tokens));
    const reserveTokens = prompt + maxOut;
    const burst = {
      rpm: limits.rpm,
      tpm: limits.tpm,
      user_rpm: limits.user_rpm ?? limits.rpm,
      user_tpm: limits.user_tpm ?? limits.tpm,
    };

    let result: AdmitResult;
    try {
      result = await store.admit({
        tenant: p.tenant_id,
        user: p.user_id,
        periods,
        limits: burst,
        tokens: reserveTokens,
        spend: managed
          ? {
            budgets: {
              tenant_day: budget(limits.daily_budget_usd),
              tenant_month: budget(limits.monthly_budget_usd),
              user_day: budget(limits.user_daily_budget_usd ?? 0),
              user_month: budget(limits.user_monthly_budget_usd ?? 0),
              global_day: budget(config.guardrails.global_daily_cap_usd),
            },
            reserve: forceDown ? worst(down!) : worst(model),
            reserve_downgraded: down ? worst(down) : 0,
          }
          : undefined,
      });
    } catch (err) {
      if (err instanceof StoreUnavailable) return unguarded(p, "admit", err, alias);
      throw err;
    }

    const lane = p.mode;
    if (!result.ok) {
      if ("retry_after_ms" in result) {
        metrics.guardrailActions.inc({ action: "rate_limit", lane });
        throw new GatewayError(
          "quota.exceeded",
          `rate limit reached: ${result.reason} per minute; retry after ${
            Math.ceil(result.retry_after_ms / 1000)
          } s`,
          {
            headers: {
              ...rateHeaders(result.rate),
              "retry-after": String(Math.max(1, Math.ceil(result.retry_after_ms / 1000))),
            },
          },
        );
      }
      metrics.guardrailActions.inc({
        action: result.reason === "budget" ? "block" : "global_cap",
        lane,
      });
      log.warn("budget blocked", {
        tenant_id: p.tenant_id,
        user_id: p.user_id,
        reason: result.reason,
        fraction: result.fraction,
      });
      throw new GatewayError(
        "budget.blocked",
        result.reason === "budget"
          ? `spend is at ${Math.round(result.fraction * 100)}% of a budget (block at ${
            THRESHOLDS.block * 100
          }%); managed requests are blocked until the period resets or an admin override`
          : "the managed lane's global daily spend cap is reached; BYOK requests still work",
      );
    }

    if (managed) {
      metrics.budgetFraction.set({ tenant: metrics.tenantLabel(p.tenant_id) }, result.fraction);
    }
    raiseAlerts(p, periods, result);
    const served = (forceDown || result.downgraded) && downAlias ? downAlias : alias;
    if (forceDown || result.downgraded) {
      metrics.guardrailActions.inc({ action: "downgrade", lane });
      log.info("budget downgrade", { tenant_id: p.tenant_id, from: alias, to: served });
    }
    const servedModel = config.models[served];
    const { reserved, charge } = result;

    return {
      alias: served,
      downgradedFrom: served !== alias ? alias : undefined,
      headers: rateHeaders(result.rate),
      settle(usage) {
        const used = usage ?? { input_tokens: 0, output_tokens: 0 };
        const actual = managed
          ? costMicro(servedModel.price, used.input_tokens, used.output_tokens)
          : 0;
        if (charge) {
          track(
            charge(used.input_tokens + used.output_tokens, actual).then(
              (charged) => {
                if (charged.ok) raiseAlerts(p, periods, charged);
              },
              (err) => {
                metrics.budgetStoreErrors.inc({ op: "charge", lane, policy: "reconcile" });
                // Admitted locally and never charged: the counters miss this request
                // until reconciliation sets them from the ledger, which has it.
                log.error("budget charge failed; reconciliation restores the counters", {
                  tenant_id: p.tenant_id,
                  error: (err as Error).message,
                  spend: actual,
                });
              },
            ),
          );
          return;
        }
        track(
          store.settle({
            tenant: p.tenant_id,
            user: p.user_id,
            periods,
            limits: burst,
            token_delta: used.input_tokens + used.output_tokens - reserveTokens,
            spend_delta: managed ? actual - reserved : 0,
          }).catch((err) => {
            metrics.budgetStoreErrors.inc({ op: "settle", lane, policy: "retry-by-reconcile" });
            // The counters keep the worst-case reservation: spend is over-counted,
            // never under-counted, until the counters are set from the ledger.
            log.error("budget settle failed; the reservation stays on the counters", {
              tenant_id: p.tenant_id,
              error: (err as Error).message,
              spend_delta: actual - reserved,
            });
          }),
        );
      },
    };
  }

  /** Budget state for `/v1/me` and usage: spend per period against the tenant's budgets. */
  async function state(p: Principal) {
    const limits = tenantLimits(config, p.tenant_id);
    const periods = periodsAt(clock.now());
    const [day, month] = await store.spend(
      requestScopes(p.tenant_id, p.user_id, periods).slice(0, 2),
    );
    const view = (spent: number, budget: number) => ({
      spent_usd: spent / 1e6,
      budget_usd: budget,
      fraction: budget > 0 ? spent / 1e6 / budget : 0,
    });
    return {
      day: view(day, limits.daily_budget_usd),
      month: view(month, limits.monthly_budget_usd),
      override: await store.getOverride(p.tenant_id),
      thresholds: THRESHOLDS,
    };
  }

  return {
    admit,
    state,
    /** Waits for background settlements and alert deliveries, for graceful shutdown. */
    async idle(): Promise<void> {
      while (pending.size) await Promise.all(pending);
      await alerts.idle();
    },
  };
}

export type Guard = ReturnType<typeof createGuard>;
