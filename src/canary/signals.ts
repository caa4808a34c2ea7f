/**
 * The runbook conditions a canary is judged on (ops spec §6), computed from
 * cumulative counters sampled over time:
 *
 * - RB-1: the 5xx share of API requests over the error window > 2% (5 min).
 * - RB-2: P95 of non-streamed chat latency over the latency window > the SLO
 *   (800 ms, 10 min). "P95 > T" is the same statement as "more than 5% of the
 *   requests took longer than T", so it is judged on that share: exact, with
 *   no quantile estimate in the decision.
 *
 * Counters, not the gateway's own windows: `/admin/slo` keeps one-minute
 * slots (5m, 1h, 1d, 30d), but a rollout needs windows of any length, from
 * its own start (tests run on seconds). The difference of two samples of a
 * cumulative counter gives exactly that.
 */

/** Cumulative counters of one gateway (or a sum of several) at one instant. */
export interface Sample {
  /** When it was taken (ms since the epoch, the rollout clock). */
  at: number;
  /** API requests (`/v1/…`), and those answered with a 5xx. */
  requests: number;
  errors: number;
  /** Non-streamed chat requests, and those slower than `slowOverMs`. */
  chat: number;
  slow: number;
  /** The latency SLO `slow` counts against. */
  slowOverMs: number;
  /** Cumulative latency histogram of those requests ([upper bound in ms, count], last = Infinity), when known. */
  buckets?: Array<[number, number]>;
}

export interface Rules {
  /** RB-1. */
  errors: { windowMs: number; threshold: number };
  /** RB-2: the quantile (0.95) that must stay under the SLO. */
  latency: { windowMs: number; quantile: number };
  /** Fewer events than this in a window judge nothing. */
  minRequests: number;
}

export const SPEC_RULES: Rules = {
  errors: { windowMs: 5 * 60_000, threshold: 0.02 },
  latency: { windowMs: 10 * 60_000, quantile: 0.95 },
  minRequests: 20,
};

/**
 * - `warming`: less than a whole window observed yet ("for 5 min" needs 5 min).
 * - `no_data`: a whole window, but fewer events than `minRequests`.
 */
export type VerdictState = "ok" | "breach" | "warming" | "no_data";

export interface Verdict {
  rule: "RB-1" | "RB-2";
  state: VerdictState;
  /** The share measured (5xx share, or share slower than the SLO); null without events. */
  ratio: number | null;
  /** The share that breaches when exceeded. */
  threshold: number;
  bad: number;
  total: number;
  windowMs: number;
  /** How much time the counted events span (less than windowMs while warming). */
  spanMs: number;
  /** RB-2 only: the SLO in ms, and the quantile estimate when a histogram is known. */
  sloMs?: number;
  quantileMs?: number | null;
}

export interface WindowDelta {
  full: boolean;
  spanMs: number;
  from: Sample;
  to: Sample;
}

/**
 * The counters' change over the trailing window ending at the newest sample:
 * from the newest sample at least `windowMs` older (then the window is full),
 * else from the oldest one kept.
 */
export function windowOf(history: readonly Sample[], windowMs: number): WindowDelta | undefined {
  const to = history.at(-1);
  if (!to) return undefined;
  const start = to.at - windowMs;
  const from = history.findLast((s) => s.at <= start);
  if (from) return { full: true, spanMs: to.at - from.at, from, to };
  return { full: false, spanMs: to.at - history[0].at, from: history[0], to };
}

/** Bucket counts of `to` minus `from` (same bounds: the same gateway's histogram). */
function bucketDelta(w: WindowDelta): Array<[number, number]> | undefined {
  const { from, to } = w;
  if (!to.buckets) return undefined;
  const before = new Map(from.buckets ?? []);
  return to.buckets.map(([le, n]) => [le, n - (before.get(le) ?? 0)]);
}

/**
 * Prometheus' `histogram_quantile` on cumulative buckets: linear within the
 * bucket holding the rank; in the open-ended bucket, the highest finite bound.
 */
export function quantileOf(buckets: Array<[number, number]>, q: number): number | null {
  const total = buckets.at(-1)?.[1] ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const [le, count] of buckets) {
    if (count >= rank) {
      if (le === Infinity) return prevLe;
      if (count === prevCount) return le;
      return prevLe + (le - prevLe) * ((rank - prevCount) / (count - prevCount));
    }
    prevLe = le;
    prevCount = count;
  }
  return prevLe;
}

/**
 * How many of a histogram's events were above `ms`: exact on a bucket bound
 * (the gateway's buckets have one at 800 ms), linear within a bucket otherwise.
 */
export function countAbove(buckets: Array<[number, number]>, ms: number): number {
  const total = buckets.at(-1)?.[1] ?? 0;
  let prevLe = 0;
  let prevCount = 0;
  for (const [le, count] of buckets) {
    if (le >= ms) {
      const within = le === Infinity || le === prevLe
        ? prevCount
        : prevCount + (count - prevCount) * ((ms - prevLe) / (le - prevLe));
      return Math.max(0, total - (le === ms ? count : within));
    }
    prevLe = le;
    prevCount = count;
  }
  return 0;
}

function judge(
  full: boolean,
  bad: number,
  total: number,
  threshold: number,
  minRequests: number,
): { state: VerdictState; ratio: number | null } {
  const ratio = total > 0 ? bad / total : null;
  if (!full) return { state: "warming", ratio };
  if (total === 0 || total < minRequests) return { state: "no_data", ratio };
  return { state: ratio! > threshold ? "breach" : "ok", ratio };
}

/** RB-1 and RB-2 over a gateway's sample history. */
export function evaluate(history: readonly Sample[], rules: Rules): [Verdict, Verdict] {
  const empty = (rule: "RB-1" | "RB-2", windowMs: number, threshold: number): Verdict => ({
    rule,
    state: "warming",
    ratio: null,
    threshold,
    bad: 0,
    total: 0,
    windowMs,
    spanMs: 0,
  });
  const e = windowOf(history, rules.errors.windowMs);
  const latencyThreshold = 1 - rules.latency.quantile;
  const l = windowOf(history, rules.latency.windowMs);
  let rb1 = empty("RB-1", rules.errors.windowMs, rules.errors.threshold);
  if (e) {
    const total = e.to.requests - e.from.requests;
    const bad = e.to.errors - e.from.errors;
    rb1 = {
      ...rb1,
      ...judge(e.full, bad, total, rules.errors.threshold, rules.minRequests),
      bad,
      total,
      spanMs: e.spanMs,
    };
  }
  let rb2 = empty("RB-2", rules.latency.windowMs, latencyThreshold);
  if (l) {
    const total = l.to.chat - l.from.chat;
    const bad = l.to.slow - l.from.slow;
    const buckets = bucketDelta(l);
    rb2 = {
      ...rb2,
      // Float compare with a hair of slack: 0.05 of 20 is 1 slow request, which is not "more than".
      ...judge(l.full, bad, total, latencyThreshold + 1e-9, rules.minRequests),
      threshold: latencyThreshold,
      bad,
      total,
      spanMs: l.spanMs,
      sloMs: l.to.slowOverMs,
      quantileMs: buckets ? quantileOf(buckets, rules.latency.quantile) : undefined,
    };
  }
  return [rb1, rb2];
}

/**
 * Keeps what the longest window still needs: the newest sample at least
 * `keepMs` old (the window's baseline) and everything after it.
 */
export function trim(history: Sample[], keepMs: number): Sample[] {
  const to = history.at(-1);
  if (!to) return history;
  const baseline = history.findLastIndex((s) => s.at <= to.at - keepMs);
  return baseline > 0 ? history.slice(baseline) : history;
}

const pct = (r: number | null) => r === null ? "n/a" : `${(r * 100).toFixed(1)}%`;
/** A duration for a report line: "1.5s". */
export const secs = (ms: number) => `${+(ms / 1000).toFixed(2)}s`;

/** One verdict as a line of the report. */
export function describeVerdict(v: Verdict): string {
  const what = v.rule === "RB-1"
    ? `5xx ${pct(v.ratio)} (${v.bad}/${v.total})`
    : `>${v.sloMs ?? "?"}ms ${pct(v.ratio)} (${v.bad}/${v.total})${
      typeof v.quantileMs === "number" ? `, P95≈${Math.round(v.quantileMs)}ms` : ""
    }`;
  const state = v.state === "warming"
    ? `warming ${secs(v.spanMs)}/${secs(v.windowMs)}`
    : v.state === "no_data"
    ? "too few requests to judge"
    : v.state;
  return `${v.rule} ${what} over ${secs(v.windowMs)}, limit ${pct(v.threshold)}: ${state}`;
}

/** Why a breach is one, in the words of the runbook. */
export function explainBreach(v: Verdict): string {
  return v.rule === "RB-1"
    ? `RB-1: 5xx ratio ${pct(v.ratio)} (${v.bad} of ${v.total} requests) over the last ${
      secs(v.windowMs)
    } > ${pct(v.threshold)}`
    : `RB-2: ${pct(v.ratio)} of non-streamed chat requests (${v.bad} of ${v.total}) slower than ${
      v.sloMs ?? "?"
    } ms over the last ${secs(v.windowMs)}, so P${
      Math.round((1 - v.threshold) * 100)
    } > SLO (more than ${pct(v.threshold)} slower)`;
}
