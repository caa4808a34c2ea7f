import { Redis } from "@upstash/redis";
import type { Config } from "../config.ts";
import { ADMIT_LUA, SETTLE_LUA, SPEND_LUA } from "./redis_scripts.ts";
import { ScriptCoalescer } from "./coalescer.ts";
import { type Pipeline, restPipeline } from "./rest_pipeline.ts";
import {
  type AdmitInput,
  type AdmitResult,
  type BudgetStore,
  keys,
  type Override,
  requestScopes,
  type SettleInput,
  type SpendScope,
  StoreUnavailable,
  THRESHOLDS,
} from "./store.ts";

const DAY_TTL_S = 2 * 86_400;
const MONTH_TTL_S = 35 * 86_400;
/**
 * Charges and settlements happen after the response: waiting this long lets
 * the ones of requests finishing together share a round trip.
 */
const OFF_PATH_LINGER_MS = 2;
const ttlFor = (s: SpendScope) => (s.period === "day" ? DAY_TTL_S : MONTH_TTL_S);

/**
 * The shared store: Redis over the Upstash REST protocol, so one client serves
 * Upstash on Deno Deploy and a REST bridge in front of Redis when self-hosted.
 * Admission and settlement are one EVALSHA each (after a SCRIPT LOAD when Redis
 * has lost the script), sent by a bare `/pipeline` client; concurrent calls
 * share round trips.
 */
export class RedisBudgetStore implements BudgetStore {
  readonly #redis: Redis;
  readonly #keys: ReturnType<typeof keys>;
  readonly #admit;
  readonly #charge;
  readonly #settle;
  readonly #spend;

  constructor(redis: Redis, pipeline: Pipeline, prefix: string) {
    this.#redis = redis;
    this.#keys = keys(prefix);
    this.#admit = new ScriptCoalescer(pipeline, ADMIT_LUA);
    this.#charge = new ScriptCoalescer(pipeline, ADMIT_LUA, OFF_PATH_LINGER_MS);
    this.#settle = new ScriptCoalescer(pipeline, SETTLE_LUA, OFF_PATH_LINGER_MS);
    this.#spend = redis.createScript<number>(SPEND_LUA);
  }

  static fromConfig(cfg: Config["guardrails"]["redis"]): RedisBudgetStore {
    const redis = new Redis({
      url: cfg.url!,
      token: cfg.token!.reveal(),
      // The guard owns retry policy: a slow store must fail within the budget
      // of one request, not after the client's own backoff.
      retry: false,
      signal: () => AbortSignal.timeout(cfg.timeout_ms),
      automaticDeserialization: false,
      enableTelemetry: false,
      enableAutoPipelining: false,
      readYourWrites: false,
    });
    const pipeline = restPipeline({
      url: cfg.url!,
      token: cfg.token!.reveal(),
      timeoutMs: cfg.timeout_ms,
    });
    return new RedisBudgetStore(redis, pipeline, cfg.prefix);
  }

  async #call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw new StoreUnavailable(`budget store ${what} failed: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  async admit(input: AdmitInput): Promise<AdmitResult> {
    const k = this.#keys;
    const { tenant, user, limits, periods } = input;
    const spend = input.spend;
    const b = spend?.budgets;
    const keyList = [
      k.requests(tenant),
      k.requests(tenant, user),
      k.tokens(tenant),
      k.tokens(tenant, user),
      ...requestScopes(tenant, user, periods).map((s) => k.spend(s)),
      k.override(tenant),
      k.alert(tenant, "day", periods.day),
      k.alert(tenant, "month", periods.month),
    ];
    const args = [
      limits.rpm,
      limits.user_rpm,
      limits.tpm,
      limits.user_tpm,
      input.tokens,
      spend ? 1 : 0,
      spend?.reserve ?? 0,
      spend?.reserve_downgraded ?? 0,
      b?.tenant_day ?? 0,
      b?.tenant_month ?? 0,
      b?.user_day ?? 0,
      b?.user_month ?? 0,
      b?.global_day ?? 0,
      THRESHOLDS.alert,
      THRESHOLDS.downgrade,
      THRESHOLDS.block,
      DAY_TTL_S,
      MONTH_TTL_S,
      input.force ? 1 : 0,
    ].map(String);
    const script = input.force ? this.#charge : this.#admit;
    const r = await this.#call("admit", () => script.exec(keyList, args)) as Array<
      string | number
    >;
    const n = (i: number) => Number(r[i]);
    const rate = {
      requests: { limit: n(8), remaining: n(9), reset_ms: n(10) },
      tokens: { limit: n(11), remaining: n(12), reset_ms: n(13) },
    };
    const reason = String(r[1]);
    if (n(0) === 1) {
      return {
        ok: true,
        rate,
        fraction: n(3),
        downgraded: n(4) === 1,
        alerts: [...(n(5) ? ["day" as const] : []), ...(n(6) ? ["month" as const] : [])],
        reserved: n(7),
        spent: [n(14), n(15), n(16), n(17), n(18)],
      };
    }
    if (reason === "requests" || reason === "tokens") {
      return { ok: false, reason, retry_after_ms: n(2), rate };
    }
    return { ok: false, reason: reason as "budget" | "global_cap", fraction: n(3) };
  }

  async settle(input: SettleInput): Promise<void> {
    const k = this.#keys;
    const { tenant, user, limits, periods } = input;
    await this.#call("settle", () =>
      this.#settle.exec(
        [
          k.tokens(tenant),
          k.tokens(tenant, user),
          ...requestScopes(tenant, user, periods).map((s) => k.spend(s)),
        ],
        [limits.tpm, limits.user_tpm, input.token_delta, input.spend_delta, DAY_TTL_S, MONTH_TTL_S]
          .map(String),
      ));
  }

  async setOverride(o: Override): Promise<void> {
    const ttl = Math.max(1, o.expires_at - Date.now());
    await this.#call(
      "override",
      () => this.#redis.set(this.#keys.override(o.tenant_id), JSON.stringify(o), { px: ttl }),
    );
  }

  async getOverride(tenant: string): Promise<Override | null> {
    const raw = await this.#call(
      "override",
      () => this.#redis.get<string>(this.#keys.override(tenant)),
    );
    return raw ? JSON.parse(raw) : null;
  }

  async clearOverride(tenant: string): Promise<void> {
    await this.#call("override", () => this.#redis.del(this.#keys.override(tenant)));
  }

  async spend(scopes: SpendScope[]): Promise<number[]> {
    if (scopes.length === 0) return [];
    const values = await this.#call(
      "spend",
      () => this.#redis.mget<Array<string | null>>(...scopes.map((s) => this.#keys.spend(s))),
    );
    return values.map((v) => Number(v ?? 0));
  }

  async setSpend(scope: SpendScope, micro: number): Promise<void> {
    await this.#call(
      "reconcile",
      () =>
        this.#spend.exec([this.#keys.spend(scope)], ["set", String(micro), String(ttlFor(scope))]),
    );
  }

  async correctSpend(scope: SpendScope, deltaMicro: number): Promise<void> {
    await this.#call(
      "reconcile",
      () =>
        this.#spend.exec([this.#keys.spend(scope)], [
          "incr",
          String(deltaMicro),
          String(ttlFor(scope)),
        ]),
    );
  }
}
