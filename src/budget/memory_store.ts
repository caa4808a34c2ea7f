import type { Clock } from "../clock.ts";
import { refill, waitMs } from "./bucket.ts";
import {
  type AdmitInput,
  type AdmitResult,
  type BudgetStore,
  keys,
  type Override,
  type RateWindow,
  requestScopes,
  type SettleInput,
  type SpendScope,
  THRESHOLDS,
} from "./store.ts";

interface Bucket {
  tokens: number;
  ts: number;
}

/**
 * The embedded store for one process (`deno task start`). JavaScript runs each
 * call to completion, so every check-and-update here is atomic; the Redis
 * store gives the same guarantee across replicas with Lua.
 */
export class MemoryBudgetStore implements BudgetStore {
  readonly #buckets = new Map<string, Bucket>();
  readonly #counters = new Map<string, number>();
  readonly #alerts = new Set<string>();
  readonly #overrides = new Map<string, Override>();
  readonly #keys = keys("mem");

  constructor(private readonly clock: Clock) {}

  #level(key: string, cap: number, now: number): number {
    const b = this.#buckets.get(key);
    return refill(b?.tokens, b?.ts, cap, now);
  }

  #window(levels: Array<[number, number]>): RateWindow {
    const [tokens, cap] = levels.reduce((a, b) => (b[0] < a[0] ? b : a));
    return {
      limit: cap,
      remaining: Math.max(0, Math.floor(tokens)),
      reset_ms: waitMs(tokens, cap, cap),
    };
  }

  #overrideActive(tenant: string, now: number): boolean {
    const o = this.#overrides.get(tenant);
    return o !== undefined && o.expires_at > now;
  }

  admit(input: AdmitInput): Promise<AdmitResult> {
    const now = this.clock.now();
    const { tenant, user, limits } = input;
    const k = this.#keys;
    const req: Array<[string, number]> = [[k.requests(tenant), limits.rpm], [
      k.requests(tenant, user),
      limits.user_rpm,
    ]];
    const tok: Array<[string, number]> = [[k.tokens(tenant), limits.tpm], [
      k.tokens(tenant, user),
      limits.user_tpm,
    ]];
    const reqLevels = req.map(([key, cap]) =>
      [this.#level(key, cap, now), cap] as [number, number]
    );
    const tokLevels = tok.map(([key, cap]) =>
      [this.#level(key, cap, now), cap] as [number, number]
    );
    const cost = tokLevels.map(([, cap]) => Math.min(input.tokens, cap));
    const rate = () => ({ requests: this.#window(reqLevels), tokens: this.#window(tokLevels) });

    const force = input.force === true;
    const reqWait = Math.max(...reqLevels.map(([lvl, cap]) => waitMs(lvl, 1, cap)));
    if (reqWait > 0 && !force) {
      return Promise.resolve({
        ok: false,
        reason: "requests",
        retry_after_ms: reqWait,
        rate: rate(),
      });
    }
    const tokWait = Math.max(...tokLevels.map(([lvl, cap], i) => waitMs(lvl, cost[i], cap)));
    if (tokWait > 0 && !force) {
      return Promise.resolve({
        ok: false,
        reason: "tokens",
        retry_after_ms: tokWait,
        rate: rate(),
      });
    }

    let fraction = 0;
    let downgraded = false;
    let reserved = 0;
    const alerts: Array<"day" | "month"> = [];
    let spent = [0, 0, 0, 0, 0];
    if (input.spend) {
      const { budgets } = input.spend;
      const scopes = requestScopes(tenant, user, input.periods).map((s) => k.spend(s));
      spent = scopes.map((key) => this.#counters.get(key) ?? 0);
      const limitsMicro = [
        budgets.tenant_day,
        budgets.tenant_month,
        budgets.user_day,
        budgets.user_month,
      ];
      const fractions = limitsMicro.map((b, i) => (b > 0 ? spent[i] / b : 0));
      fraction = Math.max(...fractions);
      if (budgets.global_day > 0 && spent[4] >= budgets.global_day && !force) {
        return Promise.resolve({ ok: false, reason: "global_cap", fraction });
      }
      if (fraction >= THRESHOLDS.block && !force && !this.#overrideActive(tenant, now)) {
        return Promise.resolve({ ok: false, reason: "budget", fraction });
      }
      downgraded = !force && fraction >= THRESHOLDS.downgrade &&
        input.spend.reserve_downgraded > 0;
      reserved = downgraded ? input.spend.reserve_downgraded : input.spend.reserve;
      spent = spent.map((v) => v + reserved);
      scopes.forEach((key, i) => this.#counters.set(key, spent[i]));
      for (const [i, period] of (["day", "month"] as const).entries()) {
        const alertKey = k.alert(tenant, period, input.periods[period]);
        if (fractions[i] >= THRESHOLDS.alert && !this.#alerts.has(alertKey)) {
          this.#alerts.add(alertKey);
          alerts.push(period);
        }
      }
    }

    req.forEach(([key], i) => {
      reqLevels[i][0] -= 1;
      this.#buckets.set(key, { tokens: reqLevels[i][0], ts: now });
    });
    tok.forEach(([key], i) => {
      tokLevels[i][0] -= cost[i];
      this.#buckets.set(key, { tokens: tokLevels[i][0], ts: now });
    });
    return Promise.resolve({
      ok: true,
      rate: rate(),
      fraction,
      downgraded,
      alerts,
      reserved,
      spent,
    });
  }

  settle(input: SettleInput): Promise<void> {
    const now = this.clock.now();
    const k = this.#keys;
    const { tenant, user, limits } = input;
    for (
      const [key, cap] of [[k.tokens(tenant), limits.tpm], [
        k.tokens(tenant, user),
        limits.user_tpm,
      ]] as const
    ) {
      const level = this.#level(key, cap, now);
      this.#buckets.set(key, { tokens: Math.min(cap, level - input.token_delta), ts: now });
    }
    if (input.spend_delta !== 0) {
      for (const scope of requestScopes(tenant, user, input.periods)) {
        const key = k.spend(scope);
        this.#counters.set(key, (this.#counters.get(key) ?? 0) + input.spend_delta);
      }
    }
    return Promise.resolve();
  }

  setOverride(o: Override): Promise<void> {
    this.#overrides.set(o.tenant_id, o);
    return Promise.resolve();
  }

  getOverride(tenant: string): Promise<Override | null> {
    return Promise.resolve(
      this.#overrideActive(tenant, this.clock.now()) ? this.#overrides.get(tenant)! : null,
    );
  }

  clearOverride(tenant: string): Promise<void> {
    this.#overrides.delete(tenant);
    return Promise.resolve();
  }

  spend(scopes: SpendScope[]): Promise<number[]> {
    return Promise.resolve(scopes.map((s) => this.#counters.get(this.#keys.spend(s)) ?? 0));
  }

  setSpend(scope: SpendScope, micro: number): Promise<void> {
    this.#counters.set(this.#keys.spend(scope), micro);
    return Promise.resolve();
  }

  correctSpend(scope: SpendScope, deltaMicro: number): Promise<void> {
    const key = this.#keys.spend(scope);
    this.#counters.set(key, (this.#counters.get(key) ?? 0) + deltaMicro);
    return Promise.resolve();
  }
}
