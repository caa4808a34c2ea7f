import type { Clock } from "../clock.ts";
import {
  type AdmitInput,
  type AdmitResult,
  type BudgetStore,
  type Override,
  type SettleInput,
  type SpendBudgets,
  type SpendScope,
  THRESHOLDS,
} from "./store.ts";

export interface LocalAdmissionOptions {
  clock: Clock;
  /** How long the store's last answer for a tenant and user may decide locally. */
  freshMs: number;
  /** Local admissions per tenant and user not yet charged to the store. */
  maxInFlight: number;
}

/**
 * Local admission stays this far from every limit: inside the last 10% of a
 * rate window or of the global cap, and from the budget alert threshold up,
 * every request takes the store's round trip, so blocks, downgrades and
 * alerts are always decided on the shared counters.
 */
const MARGIN = 0.1;

/** The highest fraction of the four tenant and user budgets, with `pending` added to each counter. */
function fractionOf(spent: number[], pending: number, b: SpendBudgets): number {
  let fraction = 0;
  [b.tenant_day, b.tenant_month, b.user_day, b.user_month].forEach((budget, i) => {
    if (budget > 0) fraction = Math.max(fraction, (spent[i] + pending) / budget);
  });
  return fraction;
}

/** What the store last said for one tenant, user and period, plus what was admitted since. */
interface Entry {
  at: number;
  requests: { limit: number; remaining: number; reset_ms: number };
  tokens: { limit: number; remaining: number; reset_ms: number };
  spent: number[];
  inFlight: number;
  pendingTokens: number;
  pendingSpend: number;
}

/**
 * A budget store in front of the shared one that admits far-from-the-limit
 * requests without a round trip before the provider call. The store's last
 * answer (rate windows and spend counters) is fresh for `freshMs`; a request
 * that fits inside it, with everything admitted locally since counted as
 * already taken, is admitted at once, and its actual usage is charged to the
 * store after the response (one round trip instead of an admission and a
 * settlement). Each charge's answer refreshes the view.
 *
 * Bound: per edge, tenant and user, at most `maxInFlight` admissions are not
 * yet on the shared counters. Across E edges a limit can be passed by at most
 * E × maxInFlight requests (and their worst-case cost) within one `freshMs`,
 * and only when those edges' views were all below the margins above.
 */
export class LocalAdmission implements BudgetStore {
  readonly #entries = new Map<string, Entry>();
  #sweptAt = -Infinity;

  constructor(readonly inner: BudgetStore, private readonly opts: LocalAdmissionOptions) {}

  async admit(input: AdmitInput): Promise<AdmitResult> {
    const key = `${input.tenant}\n${input.user}\n${input.periods.month}\n${input.periods.day}\n${
      input.spend ? "m" : "b"
    }`;
    const entry = this.#entries.get(key);
    if (!input.force && entry && this.#fits(entry, input)) return this.#local(key, entry, input);
    try {
      const result = await this.inner.admit(input);
      this.#learn(key, result);
      return result;
    } catch (err) {
      if (entry) entry.at = -Infinity;
      throw err;
    }
  }

  #fits(e: Entry, input: AdmitInput): boolean {
    if (this.opts.clock.now() - e.at > this.opts.freshMs) return false;
    if (e.inFlight >= this.opts.maxInFlight) return false;
    const { requests, tokens } = e;
    if (requests.remaining - (e.inFlight + 1) < requests.limit * MARGIN) return false;
    if (tokens.remaining - e.pendingTokens - input.tokens < tokens.limit * MARGIN) return false;
    if (!input.spend) return true;
    const pending = e.pendingSpend + input.spend.reserve;
    const b = input.spend.budgets;
    if (fractionOf(e.spent, pending, b) >= THRESHOLDS.alert) return false;
    return !(b.global_day > 0 && e.spent[4] + pending >= b.global_day * (1 - MARGIN));
  }

  #local(key: string, e: Entry, input: AdmitInput): AdmitResult {
    const reserve = input.spend?.reserve ?? 0;
    e.inFlight++;
    e.pendingTokens += input.tokens;
    e.pendingSpend += reserve;
    const fraction = input.spend ? fractionOf(e.spent, e.pendingSpend, input.spend.budgets) : 0;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      e.inFlight--;
      e.pendingTokens -= input.tokens;
      e.pendingSpend -= reserve;
    };
    return {
      ok: true,
      rate: {
        requests: { ...e.requests, remaining: Math.max(0, e.requests.remaining - e.inFlight) },
        tokens: { ...e.tokens, remaining: Math.max(0, e.tokens.remaining - e.pendingTokens) },
      },
      fraction,
      downgraded: false,
      alerts: [],
      reserved: reserve,
      spent: e.spent.map((v) => v + e.pendingSpend),
      charge: async (tokens, spend) => {
        try {
          const result = await this.inner.admit({
            ...input,
            tokens,
            force: true,
            spend: input.spend && { ...input.spend, reserve: spend, reserve_downgraded: 0 },
          });
          release();
          this.#learn(key, result);
          return result;
        } catch (err) {
          release();
          // The store could not be reached: the next request asks it, and meets its outage policy.
          e.at = -Infinity;
          throw err;
        }
      },
    };
  }

  #learn(key: string, result: AdmitResult) {
    const e = this.#entries.get(key);
    if (!result.ok || result.downgraded) {
      // Near or past a limit: every request asks the store until it says otherwise.
      if (e) e.at = -Infinity;
      return;
    }
    const fresh = {
      at: this.opts.clock.now(),
      requests: result.rate.requests,
      tokens: result.rate.tokens,
      spent: result.spent,
    };
    if (e) {
      Object.assign(e, fresh);
      return;
    }
    this.#sweep();
    this.#entries.set(key, { ...fresh, inFlight: 0, pendingTokens: 0, pendingSpend: 0 });
  }

  /** Drops stale views with nothing in flight, at most once per `freshMs`, so idle users go. */
  #sweep() {
    const now = this.opts.clock.now();
    if (this.#entries.size < 1024 || now - this.#sweptAt < this.opts.freshMs) return;
    this.#sweptAt = now;
    const stale = now - this.opts.freshMs;
    for (const [key, e] of this.#entries) {
      if (e.at < stale && e.inFlight === 0) this.#entries.delete(key);
    }
  }

  /** Views held, for tests and the bound above. */
  get size(): number {
    return this.#entries.size;
  }

  settle(input: SettleInput): Promise<void> {
    return this.inner.settle(input);
  }
  setOverride(o: Override): Promise<void> {
    return this.inner.setOverride(o);
  }
  getOverride(tenant: string): Promise<Override | null> {
    return this.inner.getOverride(tenant);
  }
  clearOverride(tenant: string): Promise<void> {
    return this.inner.clearOverride(tenant);
  }
  spend(scopes: SpendScope[]): Promise<number[]> {
    return this.inner.spend(scopes);
  }
  setSpend(scope: SpendScope, micro: number): Promise<void> {
    return this.inner.setSpend(scope, micro);
  }
  correctSpend(scope: SpendScope, deltaMicro: number): Promise<void> {
    return this.inner.correctSpend(scope, deltaMicro);
  }
}
