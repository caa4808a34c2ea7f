/**
 * The budget store: token buckets and spend counters, each check-and-update
 * atomic in one call. Two implementations: `memory` (one process) and
 * `redis` (shared by every replica, one Lua script per call).
 *
 * Money is integer micro-dollars throughout, so concurrent increments never
 * accumulate float error.
 */

/** Threshold fractions of a budget, from the ops spec. */
export const THRESHOLDS = { alert: 0.8, downgrade: 0.9, block: 1.1 } as const;

/** What a budget's spent fraction calls for, by the thresholds above. */
export function budgetAction(fraction: number): "none" | "alert" | "downgrade" | "block" {
  if (fraction >= THRESHOLDS.block) return "block";
  if (fraction >= THRESHOLDS.downgrade) return "downgrade";
  if (fraction >= THRESHOLDS.alert) return "alert";
  return "none";
}

export interface BurstLimits {
  rpm: number;
  tpm: number;
  user_rpm: number;
  user_tpm: number;
}

/** Spend budgets in micro-dollars; 0 means no budget for that scope. */
export interface SpendBudgets {
  tenant_day: number;
  tenant_month: number;
  user_day: number;
  user_month: number;
  global_day: number;
}

export interface Periods {
  day: string;
  month: string;
}

export interface AdmitInput {
  tenant: string;
  user: string;
  periods: Periods;
  limits: BurstLimits;
  /** Tokens to take from the TPM buckets now; corrected at settle. */
  tokens: number;
  /**
   * Charge, don't check: the request was admitted without a round trip and has
   * been served, so its actual usage is taken whatever the counters say.
   */
  force?: boolean;
  /** Present for the managed lane only: BYOK is never charged to managed budgets. */
  spend?: {
    budgets: SpendBudgets;
    /** Worst-case cost to reserve. */
    reserve: number;
    /** Worst-case cost on the downgrade model; 0 when the tenant has none. */
    reserve_downgraded: number;
  };
}

export interface RateWindow {
  limit: number;
  remaining: number;
  /** Milliseconds until the bucket is full again. */
  reset_ms: number;
}

export interface RateState {
  requests: RateWindow;
  tokens: RateWindow;
}

export type AdmitResult =
  | {
    ok: true;
    rate: RateState;
    /** Highest fraction of any budget used before this request. */
    fraction: number;
    downgraded: boolean;
    /** Budget periods whose 80% alert this request raised (once per tenant and period). */
    alerts: Array<"day" | "month">;
    /** What was reserved, to be settled. */
    reserved: number;
    /** The five `requestScopes` spend counters after this call, in micro-dollars (0 for BYOK). */
    spent: number[];
    /**
     * Set when admitted locally, without a store round trip: takes the actual
     * tokens and spend once the request is done, instead of a settlement.
     */
    charge?: (tokens: number, spend: number) => Promise<AdmitResult>;
  }
  | { ok: false; reason: "requests" | "tokens"; retry_after_ms: number; rate: RateState }
  | { ok: false; reason: "budget" | "global_cap"; fraction: number };

export interface SettleInput {
  tenant: string;
  user: string;
  periods: Periods;
  limits: BurstLimits;
  /** Actual tokens minus the tokens taken at admission. */
  token_delta: number;
  /** Actual cost minus the reservation (managed lane only). */
  spend_delta: number;
}

export interface Override {
  tenant_id: string;
  reason: string;
  by: string;
  /** Epoch milliseconds. */
  expires_at: number;
}

export type SpendScope =
  | { scope: "tenant"; id: string; period: "day" | "month"; bucket: string }
  | { scope: "user"; tenant: string; id: string; period: "day" | "month"; bucket: string }
  | { scope: "global"; period: "day"; bucket: string };

export interface BudgetStore {
  admit(input: AdmitInput): Promise<AdmitResult>;
  settle(input: SettleInput): Promise<void>;
  setOverride(override: Override): Promise<void>;
  getOverride(tenant: string): Promise<Override | null>;
  clearOverride(tenant: string): Promise<void>;
  /** Spend in micro-dollars for each scope, for budget state and reconciliation. */
  spend(scopes: SpendScope[]): Promise<number[]>;
  /** Reconciliation hook: set a spend counter to the ledger's truth. */
  setSpend(scope: SpendScope, micro: number): Promise<void>;
  /** Reconciliation hook: add a correction (may be negative) to a spend counter. */
  correctSpend(scope: SpendScope, deltaMicro: number): Promise<void>;
}

/** Raised by a store that cannot be reached; the guard applies the lane's outage policy. */
export class StoreUnavailable extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StoreUnavailable";
  }
}

/**
 * Key names, shared by both stores so that reconciliation addresses the same
 * counters. Ids are escaped so that a ":" inside one cannot make two keys meet.
 */
export function keys(prefix: string) {
  const e = encodeURIComponent;
  return {
    requests: (tenant: string, user?: string) =>
      user === undefined
        ? `${prefix}:rl:req:t:${e(tenant)}`
        : `${prefix}:rl:req:u:${e(tenant)}:${e(user)}`,
    tokens: (tenant: string, user?: string) =>
      user === undefined
        ? `${prefix}:rl:tok:t:${e(tenant)}`
        : `${prefix}:rl:tok:u:${e(tenant)}:${e(user)}`,
    spend: (s: SpendScope) =>
      s.scope === "global"
        ? `${prefix}:spend:g:${s.period}:${s.bucket}`
        : s.scope === "tenant"
        ? `${prefix}:spend:t:${e(s.id)}:${s.period}:${s.bucket}`
        : `${prefix}:spend:u:${e(s.tenant)}:${e(s.id)}:${s.period}:${s.bucket}`,
    override: (tenant: string) => `${prefix}:override:${e(tenant)}`,
    alert: (tenant: string, period: "day" | "month", bucket: string) =>
      `${prefix}:alert:${e(tenant)}:${period}:${bucket}`,
  };
}

/** The five spend counters one managed request touches, in a fixed order. */
export function requestScopes(tenant: string, user: string, periods: Periods): SpendScope[] {
  return [
    { scope: "tenant", id: tenant, period: "day", bucket: periods.day },
    { scope: "tenant", id: tenant, period: "month", bucket: periods.month },
    { scope: "user", tenant, id: user, period: "day", bucket: periods.day },
    { scope: "user", tenant, id: user, period: "month", bucket: periods.month },
    { scope: "global", period: "day", bucket: periods.day },
  ];
}

const DAY_MS = 86_400_000;
/** The UTC day last asked for: every request asks, and days change rarely. */
let lastDay = { start: NaN, periods: { day: "", month: "" } };

/** UTC day and month buckets. */
export function periodsAt(ms: number): Periods {
  const start = Math.floor(ms / DAY_MS) * DAY_MS;
  if (start !== lastDay.start) {
    const iso = new Date(start).toISOString();
    lastDay = {
      start,
      periods: {
        day: iso.slice(0, 10).replaceAll("-", ""),
        month: iso.slice(0, 7).replace("-", ""),
      },
    };
  }
  return lastDay.periods;
}

export const usdToMicro = (usd: number): number => Math.round(usd * 1e6);
