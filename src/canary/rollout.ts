/**
 * The rollout loop shared by both kinds of canary (ops spec §4): move a share
 * of traffic, watch RB-1 and RB-2 on the canary, widen step by step, promote
 * at the end, or roll back at the first breach. What moves traffic (nginx
 * weights, a flag's canary percent) and where signals come from are injected,
 * as are time and sleep, so the decisions are tested without waiting.
 */
import { sleep } from "../providers/sleep.ts";
import {
  describeVerdict,
  evaluate,
  explainBreach,
  type Rules,
  type Sample,
  secs,
  trim,
  type Verdict,
} from "./signals.ts";
import type { Source } from "./sources.ts";

/** Moves requests between the old and the new behaviour. */
export interface TrafficSwitch {
  /** What it will do, for the plan. */
  describe(): string[];
  /** Checks what can be checked without changing anything; throws when the rollout cannot work. */
  preflight(): Promise<void>;
  /** Sends `percent` of the traffic to the canary; says what it did. */
  apply(percent: number): Promise<string>;
  /** The canary takes all traffic for good. */
  promote(): Promise<string>;
  /** All traffic back on the stable behaviour. */
  rollback(reason: string): Promise<string>;
}

export interface Timer {
  now(): number;
  /** Rejects when the signal aborts (the operator interrupting). */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const realTimer: Timer = { now: () => Date.now(), sleep };

export interface RolloutPlan {
  /** Canary percentages, increasing, each 1..100. */
  steps: number[];
  /** How long each step runs at least. */
  stepMs: number;
  pollMs: number;
  /**
   * How much longer a step may wait for a judgeable window (enough canary
   * requests) before giving up as inconclusive.
   */
  holdMs: number;
  rules: Rules;
  /** Consecutive unreadable canary samples that count as a breach. */
  maxPollFailures: number;
}

export interface Watched {
  /** How the report names it: "canary", "stable", "gateway (all tenants)". */
  label: string;
  source: Source;
}

export interface RolloutDeps {
  traffic: TrafficSwitch;
  /** Whose signals decide. */
  canary: Watched;
  /** Watched for comparison only: a breach there too hints at a shared cause. */
  stable?: Watched;
  timer: Timer;
  log: (line: string) => void;
  signal?: AbortSignal;
}

export type Outcome = "promoted" | "rolled_back" | "not_started" | "manual_action_needed";

/** Exit codes of scripts/canary.ts, one per outcome. */
export const EXIT_CODES: Record<Outcome, number> = {
  promoted: 0,
  rolled_back: 1,
  not_started: 2,
  manual_action_needed: 3,
};

export interface RolloutResult {
  outcome: Outcome;
  exitCode: number;
  reason: string;
  /** The canary share when it ended (before a rollback or promotion). */
  percent: number;
  /** What was done to traffic, in order. */
  actions: string[];
  canary?: Verdict[];
  stable?: Verdict[];
}

export function checkSteps(steps: number[]): string[] {
  if (!steps.length) return ["--steps needs at least one percentage"];
  const problems: string[] = [];
  for (const [i, s] of steps.entries()) {
    if (!Number.isInteger(s) || s < 1 || s > 100) {
      problems.push(`step ${s} is not a whole percentage 1..100`);
    } else if (i > 0 && s <= steps[i - 1]) {
      problems.push(`steps must increase (${steps[i - 1]} then ${s})`);
    }
  }
  return problems;
}

/** A gateway's samples over the longest window, with its read failures. */
class Watcher {
  history: Sample[] = [];
  failures = 0;
  lastError = "";

  constructor(
    readonly w: Watched,
    private readonly keepMs: number,
    private readonly log: (line: string) => void,
  ) {}

  async poll(at: number): Promise<boolean> {
    let s: Sample;
    try {
      s = await this.w.source(at);
    } catch (err) {
      this.failures++;
      this.lastError = (err as Error).message;
      this.log(`  ${this.w.label}: signals unreadable (${this.failures}x): ${this.lastError}`);
      return false;
    }
    this.failures = 0;
    const last = this.history.at(-1);
    if (last && (s.requests < last.requests || s.chat < last.chat || s.errors < last.errors)) {
      // A restarted process starts its counters at 0: its windows start again.
      this.log(`  ${this.w.label}: counters went down (restarted?): windows start again`);
      this.history = [];
    }
    this.history = trim([...this.history, s], this.keepMs);
    return true;
  }
}

export async function runRollout(plan: RolloutPlan, deps: RolloutDeps): Promise<RolloutResult> {
  const { traffic, timer, log, signal } = deps;
  const keepMs = Math.max(plan.rules.errors.windowMs, plan.rules.latency.windowMs);
  const canary = new Watcher(deps.canary, keepMs, log);
  const stable = deps.stable ? new Watcher(deps.stable, keepMs, log) : undefined;
  const actions: string[] = [];
  let percent = 0;
  const verdicts = () => ({
    canary: evaluate(canary.history, plan.rules),
    ...(stable ? { stable: evaluate(stable.history, plan.rules) } : {}),
  });
  const end = (outcome: Outcome, reason: string): RolloutResult => ({
    outcome,
    exitCode: EXIT_CODES[outcome],
    reason,
    percent,
    actions,
    ...(outcome === "not_started" ? {} : verdicts()),
  });

  // Nothing changes until the switch and both gateways' signals answer.
  try {
    await traffic.preflight();
  } catch (err) {
    return end("not_started", `preflight: ${(err as Error).message}`);
  }
  const t0 = timer.now();
  for (const w of [canary, stable]) {
    if (w && !(await w.poll(t0))) {
      return end("not_started", `cannot read the ${w.w.label}'s signals: ${w.lastError}`);
    }
  }

  const rollback = async (reason: string): Promise<RolloutResult> => {
    log(`ROLLBACK: ${reason}`);
    try {
      const done = await traffic.rollback(reason);
      actions.push(done);
      log(`  ${done}`);
      return end("rolled_back", reason);
    } catch (err) {
      return end(
        "manual_action_needed",
        `${reason}; the rollback failed too: ${(err as Error).message}`,
      );
    }
  };

  try {
    for (const [i, step] of plan.steps.entries()) {
      signal?.throwIfAborted();
      try {
        const done = await traffic.apply(step);
        actions.push(done);
        percent = step;
        log(`step ${i + 1}/${plan.steps.length}: canary at ${step}%: ${done}`);
      } catch (err) {
        return await rollback(`step ${step}% could not be applied: ${(err as Error).message}`);
      }
      const started = timer.now();
      for (;;) {
        await timer.sleep(plan.pollMs, signal);
        const now = timer.now();
        await Promise.all([canary.poll(now), stable?.poll(now)]);
        if (canary.failures >= plan.maxPollFailures) {
          return await rollback(
            `the ${canary.w.label}'s signals were unreadable ${canary.failures} times in a row: ${canary.lastError}`,
          );
        }
        const v = verdicts();
        log(
          `  [+${secs(now - t0)}] ${step}% ${canary.w.label}: ${
            v.canary.map(describeVerdict).join("; ")
          }${v.stable ? ` | ${stable!.w.label}: ${v.stable.map(describeVerdict).join("; ")}` : ""}`,
        );
        const breach = v.canary.find((x) => x.state === "breach");
        if (breach) {
          const shared = v.stable?.find((x) => x.rule === breach.rule)?.state === "breach"
            ? ` (the ${
              stable!.w.label
            } breaches ${breach.rule} too: look for a shared cause, such as a provider outage)`
            : "";
          return await rollback(`${explainBreach(breach)} on the ${canary.w.label}${shared}`);
        }
        const elapsed = now - started;
        if (elapsed < plan.stepMs) continue;
        // Passed once a whole RB-1 window with enough requests was clean and the RB-2 window is whole too
        // (it may hold no non-streamed chat: streams are not what RB-2 measures).
        const [rb1, rb2] = v.canary;
        if (rb1.state === "ok" && rb2.state !== "warming") break;
        if (elapsed >= plan.stepMs + plan.holdMs) {
          return await rollback(
            `inconclusive at ${step}%: after ${secs(elapsed)} the ${canary.w.label} still has ${
              rb1.state === "warming" ? "no whole window" : `only ${rb1.total} requests`
            } (at least ${plan.rules.minRequests} needed in ${secs(plan.rules.errors.windowMs)})`,
          );
        }
      }
      log(`step ${i + 1}/${plan.steps.length}: ${step}% healthy`);
    }
  } catch (err) {
    if (signal?.aborted) return await rollback("interrupted by the operator");
    return await rollback(`unexpected error: ${(err as Error).message}`);
  }

  try {
    const done = await traffic.promote();
    actions.push(done);
    log(`PROMOTED: ${done}`);
    percent = 100;
    return end("promoted", `every step healthy (${plan.steps.join("%, ")}%)`);
  } catch (err) {
    return end(
      "manual_action_needed",
      `every step was healthy, but promoting failed: ${
        (err as Error).message
      }; traffic stays at ${percent}%`,
    );
  }
}

/** The plan as text: what --dry-run prints, and the head of every real run. */
export function describePlan(
  plan: RolloutPlan,
  deps: Pick<RolloutDeps, "traffic" | "canary" | "stable">,
): string[] {
  const r = plan.rules;
  const pct = (x: number) => `${+(x * 100).toFixed(2)}%`;
  const lines = [
    ...deps.traffic.describe(),
    `steps: ${plan.steps.map((s) => `${s}%`).join(" → ")}, then promote; each step at least ${
      secs(plan.stepMs)
    }`,
    `watch: ${deps.canary.label}${
      deps.stable ? ` (decides) and ${deps.stable.label} (for comparison)` : ""
    }, every ${secs(plan.pollMs)}`,
    `  RB-1: 5xx share of /v1/ requests over ${secs(r.errors.windowMs)} > ${
      pct(r.errors.threshold)
    }`,
    `  RB-2: P${+(r.latency.quantile * 100).toFixed(1)} of non-streamed chat over ${
      secs(r.latency.windowMs)
    } > the latency SLO (more than ${pct(1 - r.latency.quantile)} slower than it)`,
    `  a window judges once it is whole and holds ≥ ${r.minRequests} requests; a step still`,
    `  unjudged ${secs(plan.holdMs)} after its end is inconclusive (rolled back)`,
    `on a breach (or ${plan.maxPollFailures} unreadable canary samples in a row, or Ctrl-C): roll back, exit 1`,
  ];
  const longest = Math.max(r.errors.windowMs, r.latency.windowMs);
  if (plan.stepMs < longest) {
    lines.push(
      `note: steps (${secs(plan.stepMs)}) are shorter than the longest window (${
        secs(longest)
      }): the first step waits for whole windows, later ones are judged partly on earlier traffic`,
    );
  }
  return lines;
}

/** The closing report. */
export function describeResult(
  r: RolloutResult,
  labels: { canary: string; stable?: string },
): string[] {
  const verb = {
    promoted: "PROMOTED",
    rolled_back: "ROLLED BACK",
    not_started: "NOT STARTED (nothing was changed)",
    manual_action_needed: "MANUAL ACTION NEEDED",
  }[r.outcome];
  const lines = [`result: ${verb} (exit ${r.exitCode})`, `reason: ${r.reason}`];
  if (r.canary) lines.push(`${labels.canary}: ${r.canary.map(describeVerdict).join("; ")}`);
  if (r.stable && labels.stable) {
    lines.push(`${labels.stable}: ${r.stable.map(describeVerdict).join("; ")}`);
  }
  for (const a of r.actions) lines.push(`done: ${a}`);
  return lines;
}
