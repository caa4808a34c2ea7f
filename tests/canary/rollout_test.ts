import assert from "node:assert/strict";
import {
  checkSteps,
  describePlan,
  describeResult,
  type RolloutDeps,
  type RolloutPlan,
  runRollout,
  type Timer,
} from "../../src/canary/rollout.ts";
import type { Sample } from "../../src/canary/signals.ts";
import { type Behaviour, FakeSwitch, FakeTimer, simulatedGateway } from "./_fakes.ts";

const S = 1000;

/** Short windows so the arithmetic is easy to follow: RB-1 over 30 s, RB-2 over 60 s. */
const PLAN: RolloutPlan = {
  steps: [5, 25, 50, 100],
  stepMs: 60 * S,
  pollMs: 10 * S,
  holdMs: 60 * S,
  rules: {
    errors: { windowMs: 30 * S, threshold: 0.02 },
    latency: { windowMs: 60 * S, quantile: 0.95 },
    minRequests: 20,
  },
  maxPollFailures: 3,
};

interface Fleet {
  traffic: FakeSwitch;
  timer: FakeTimer;
  canary: ReturnType<typeof simulatedGateway>;
  stable: ReturnType<typeof simulatedGateway>;
  lines: string[];
  deps: RolloutDeps;
}

/** 100 requests/s split between a stable and a canary by the switch's percent. */
function fleet(
  canary: Partial<Behaviour> = {},
  stable: Partial<Behaviour> = {},
): Fleet {
  const traffic = new FakeSwitch();
  const timer = new FakeTimer();
  const c = simulatedGateway({ rps: 100, share: () => traffic.percent / 100, ...canary });
  const s = simulatedGateway({ rps: 100, share: () => 1 - traffic.percent / 100, ...stable });
  const lines: string[] = [];
  return {
    traffic,
    timer,
    canary: c,
    stable: s,
    lines,
    deps: {
      traffic,
      canary: { label: "canary", source: c },
      stable: { label: "stable", source: s },
      timer,
      log: (l) => lines.push(l),
    },
  };
}

Deno.test("a healthy canary goes through every step and is promoted", async () => {
  const f = fleet({ errorRate: 0.01, slowRate: 0.03 });
  const t0 = f.timer.now();
  const r = await runRollout(PLAN, f.deps);
  assert.equal(r.outcome, "promoted", r.reason);
  assert.equal(r.exitCode, 0);
  assert.deepEqual(f.traffic.calls, [
    "preflight",
    "apply 5",
    "apply 25",
    "apply 50",
    "apply 100",
    "promote",
  ]);
  assert.equal(f.traffic.percent, 100);
  assert.equal(r.percent, 100);
  assert.deepEqual(r.actions, ["set 5%", "set 25%", "set 50%", "set 100%", "promoted"]);
  // Every step held its whole time (fake clock: exact).
  assert.equal(f.timer.now() - t0, 4 * 60 * S);
  assert.deepEqual(r.canary!.map((v) => v.state), ["ok", "ok"]);
  // At 100% the stable gets no requests left to judge.
  assert.deepEqual(r.stable!.map((v) => v.state), ["no_data", "no_data"]);
  assert.ok(f.lines.some((l) => l === "step 4/4: 100% healthy"), f.lines.join("\n"));
  assert.equal(f.lines.at(-1), "PROMOTED: promoted");
});

Deno.test("RB-1: a failing canary is rolled back as soon as a whole window shows it", async () => {
  const f = fleet({ errorRate: 0.5 });
  const t0 = f.timer.now();
  const r = await runRollout(PLAN, f.deps);
  assert.equal(r.outcome, "rolled_back");
  assert.equal(r.exitCode, 1);
  assert.equal(r.percent, 5);
  // Polls at +10 s and +20 s only warm up the 30 s window; +30 s judges it.
  assert.equal(f.timer.now() - t0, 30 * S);
  assert.match(
    r.reason,
    /^RB-1: 5xx ratio 50\.0% \(75 of 150 requests\) over the last 30s > 2\.0% on the canary$/,
  );
  assert.deepEqual(f.traffic.calls.slice(0, 2), ["preflight", "apply 5"]);
  assert.match(f.traffic.calls.at(-1)!, /^rollback: RB-1/);
  assert.equal(f.traffic.percent, 0);
  assert.ok(!f.traffic.calls.includes("promote"));
  assert.ok(
    f.lines.some((l) => /warming 20s\/30s/.test(l)),
    "not judged before the window is whole",
  );
  const report = describeResult(r, { canary: "canary", stable: "stable" }).join("\n");
  assert.match(report, /^result: ROLLED BACK \(exit 1\)$/m);
  assert.match(report, /^canary: RB-1 5xx 50\.0% \(75\/150\) over 30s, limit 2\.0%: breach/m);
  assert.match(report, /^stable: RB-1 5xx 0\.0%/m);
  assert.match(report, /^done: back to 0%$/m);
});

Deno.test("a canary that breaks at a later step is rolled back from there", async () => {
  const timer = new FakeTimer();
  const t0 = timer.now();
  // Healthy for the first two steps (120 s), then half its requests fail.
  const f = fleet({ errorRate: (now) => (now - t0 > 125 * S ? 0.5 : 0) });
  f.deps.timer = timer;
  const r = await runRollout(PLAN, f.deps);
  assert.equal(r.outcome, "rolled_back");
  assert.equal(r.percent, 50);
  assert.deepEqual(f.traffic.calls.slice(1, 4), ["apply 5", "apply 25", "apply 50"]);
  assert.match(r.reason, /^RB-1/);
});

Deno.test("RB-2: a slow canary is rolled back once its latency window is whole", async () => {
  const f = fleet({ slowRate: 0.2 });
  const t0 = f.timer.now();
  const r = await runRollout(PLAN, f.deps);
  assert.equal(r.outcome, "rolled_back");
  assert.equal(f.timer.now() - t0, 60 * S);
  assert.match(
    r.reason,
    /^RB-2: 20\.0% of non-streamed chat requests \(60 of 300\) slower than 800 ms over the last 60s, so P95 > SLO/,
  );
});

Deno.test("a breach on the stable too is reported as a likely shared cause, and still rolled back", async () => {
  const f = fleet({ errorRate: 0.5 }, { errorRate: 0.1 });
  const r = await runRollout(PLAN, f.deps);
  assert.equal(r.outcome, "rolled_back");
  assert.match(r.reason, /the stable breaches RB-1 too: look for a shared cause/);
});

Deno.test("a breach on the stable alone does not stop the canary", async () => {
  const f = fleet({}, { errorRate: 0.5 });
  const r = await runRollout(PLAN, f.deps);
  assert.equal(r.outcome, "promoted", r.reason);
  assert.ok(
    f.lines.some((l) => /\| stable: RB-1 5xx 50\.0% .*: breach/.test(l)),
    f.lines.join("\n"),
  );
});

Deno.test("a canary that gets too few requests to judge is rolled back as inconclusive", async () => {
  const f = fleet({ rps: 0.2 });
  const t0 = f.timer.now();
  const r = await runRollout(PLAN, f.deps);
  assert.equal(r.outcome, "rolled_back");
  assert.match(
    r.reason,
    /^inconclusive at 5%: after 120s the canary still has only 0 requests \(at least 20 needed in 30s\)$/,
  );
  assert.equal(f.timer.now() - t0, PLAN.stepMs + PLAN.holdMs);
});

Deno.test("a step waits past its time for a whole window, within the hold", async () => {
  // Steps shorter than the windows: the first step runs until RB-2's 60 s window is whole.
  const f = fleet();
  const t0 = f.timer.now();
  const r = await runRollout({ ...PLAN, steps: [10, 100], stepMs: 20 * S }, f.deps);
  assert.equal(r.outcome, "promoted", r.reason);
  const firstStepEnd = f.lines.findIndex((l) => l === "step 1/2: 10% healthy");
  assert.ok(f.lines.slice(0, firstStepEnd).some((l) => /\+60s\]/.test(l)), f.lines.join("\n"));
  assert.equal(f.timer.now() - t0, 60 * S + 20 * S);
});

Deno.test("unreadable canary signals: tolerated briefly, rolled back when they persist", async () => {
  const brief = fleet();
  const r1Promise = runRollout(PLAN, {
    ...brief.deps,
    log: (l) => {
      brief.lines.push(l);
      // After the first step starts, two failed reads in a row.
      if (l.startsWith("step 1/4: canary at 5%")) brief.canary.failNext = 2;
    },
  });
  const r1 = await r1Promise;
  assert.equal(r1.outcome, "promoted", r1.reason);
  assert.equal(brief.lines.filter((l) => /canary: signals unreadable/.test(l)).length, 2);

  const down = fleet();
  const r2 = await runRollout(PLAN, {
    ...down.deps,
    log: (l) => {
      if (l.startsWith("step 2/4")) down.canary.failNext = 99;
    },
  });
  assert.equal(r2.outcome, "rolled_back");
  assert.equal(r2.percent, 25);
  assert.match(
    r2.reason,
    /^the canary's signals were unreadable 3 times in a row: connection refused$/,
  );

  // The stable's signals are for comparison only: unreadable, they stop nothing.
  const stableDown = fleet();
  const r3 = await runRollout(PLAN, {
    ...stableDown.deps,
    log: (l) => {
      if (l.startsWith("step 1/4")) stableDown.stable.failNext = 99;
    },
  });
  assert.equal(r3.outcome, "promoted", r3.reason);
});

Deno.test("nothing changes when the preflight or the first reads fail", async () => {
  const sw = fleet();
  sw.traffic.fail.preflight = new Error("nginx -t refuses the current config");
  const r1 = await runRollout(PLAN, sw.deps);
  assert.equal(r1.outcome, "not_started");
  assert.equal(r1.exitCode, 2);
  assert.equal(r1.reason, "preflight: nginx -t refuses the current config");
  assert.deepEqual(sw.traffic.calls, ["preflight"]);
  assert.equal(r1.canary, undefined);

  for (const side of ["canary", "stable"] as const) {
    const f = fleet();
    f[side].failNext = 1;
    const r = await runRollout(PLAN, f.deps);
    assert.equal(r.outcome, "not_started");
    assert.equal(r.reason, `cannot read the ${side}'s signals: connection refused`);
    assert.deepEqual(f.traffic.calls, ["preflight"]);
  }
  assert.match(
    describeResult(r1, { canary: "canary" }).join("\n"),
    /^result: NOT STARTED \(nothing was changed\) \(exit 2\)$/m,
  );
});

Deno.test("a step that cannot be applied rolls back", async () => {
  const f = fleet();
  f.traffic.fail.apply = new Error("nginx -t refused the new upstream file");
  f.traffic.failAt = 25;
  const r = await runRollout(PLAN, f.deps);
  assert.equal(r.outcome, "rolled_back");
  assert.equal(r.percent, 5, "the last step that was applied");
  assert.equal(r.reason, "step 25% could not be applied: nginx -t refused the new upstream file");
  assert.equal(f.traffic.percent, 0);
});

Deno.test("a failed rollback or promotion asks for manual action (exit 3)", async () => {
  const rb = fleet({ errorRate: 1 });
  rb.traffic.fail.rollback = new Error("nginx reload failed");
  const r1 = await runRollout(PLAN, rb.deps);
  assert.equal(r1.outcome, "manual_action_needed");
  assert.equal(r1.exitCode, 3);
  assert.match(r1.reason, /^RB-1: .*; the rollback failed too: nginx reload failed$/);

  const pr = fleet();
  pr.traffic.fail.promote = new Error("HTTP 503");
  const r2 = await runRollout(PLAN, pr.deps);
  assert.equal(r2.outcome, "manual_action_needed");
  assert.equal(r2.exitCode, 3);
  assert.equal(
    r2.reason,
    "every step was healthy, but promoting failed: HTTP 503; traffic stays at 100%",
  );
  assert.match(
    describeResult(r2, { canary: "canary" }).join("\n"),
    /^result: MANUAL ACTION NEEDED \(exit 3\)$/m,
  );
});

Deno.test("an interrupted rollout rolls back", async () => {
  const f = fleet();
  const ac = new AbortController();
  const r = await runRollout(PLAN, {
    ...f.deps,
    signal: ac.signal,
    log: (l) => {
      if (l.startsWith("step 2/4: canary at 25%")) ac.abort(new Error("SIGINT"));
    },
  });
  assert.equal(r.outcome, "rolled_back");
  assert.equal(r.reason, "interrupted by the operator");
  assert.equal(r.percent, 25);
  assert.equal(f.traffic.percent, 0);

  // Aborted between steps: the next step is not applied.
  const g = fleet();
  const ac2 = new AbortController();
  const r2 = await runRollout(PLAN, {
    ...g.deps,
    signal: ac2.signal,
    log: (l) => {
      if (l === "step 1/4: 5% healthy") ac2.abort(new Error("SIGTERM"));
    },
  });
  assert.equal(r2.reason, "interrupted by the operator");
  assert.ok(!g.traffic.calls.includes("apply 25"));
});

Deno.test("an unexpected failure mid-rollout rolls back", async () => {
  const f = fleet();
  let sleeps = 0;
  const timer: Timer = {
    now: () => f.timer.now(),
    sleep: (ms) => ++sleeps === 3 ? Promise.reject(new Error("boom")) : f.timer.sleep(ms),
  };
  const r = await runRollout(PLAN, { ...f.deps, timer });
  assert.equal(r.outcome, "rolled_back");
  assert.equal(r.reason, "unexpected error: boom");
});

Deno.test("counters that go down (a restarted canary) start the windows again", async () => {
  const f = fleet();
  let n = 0;
  let offset: Sample | undefined;
  const restarting = async (at: number): Promise<Sample> => {
    const s = await f.canary(at);
    // From the 4th read on, a fresh process answers: its counters start again from 0.
    if (++n === 4) offset = s;
    if (!offset) return s;
    return {
      ...s,
      requests: s.requests - offset.requests,
      errors: s.errors - offset.errors,
      chat: s.chat - offset.chat,
      slow: s.slow - offset.slow,
    };
  };
  const r = await runRollout(PLAN, { ...f.deps, canary: { label: "canary", source: restarting } });
  assert.equal(r.outcome, "promoted", r.reason);
  assert.equal(f.lines.filter((l) => /counters went down/.test(l)).length, 1);
});

Deno.test("checkSteps and the plan text", () => {
  assert.deepEqual(checkSteps([5, 25, 50, 100]), []);
  assert.deepEqual(checkSteps([]), ["--steps needs at least one percentage"]);
  assert.deepEqual(checkSteps([0, 50, 50, 101, 2.5]), [
    "step 0 is not a whole percentage 1..100",
    "steps must increase (50 then 50)",
    "step 101 is not a whole percentage 1..100",
    "step 2.5 is not a whole percentage 1..100",
  ]);
  const f = fleet();
  const text = describePlan(PLAN, f.deps).join("\n");
  assert.match(text, /^traffic: fake$/m);
  assert.match(text, /^steps: 5% → 25% → 50% → 100%, then promote; each step at least 60s$/m);
  assert.match(text, /^watch: canary \(decides\) and stable \(for comparison\), every 10s$/m);
  assert.match(text, /^ {2}RB-1: 5xx share of \/v1\/ requests over 30s > 2%$/m);
  assert.match(text, /^ {2}RB-2: P95 of non-streamed chat over 60s > the latency SLO/m);
  assert.doesNotMatch(text, /^note:/m);
  const short = describePlan({ ...PLAN, stepMs: 20 * S }, { ...f.deps, stable: undefined });
  assert.match(
    short.join("\n"),
    /^note: steps \(20s\) are shorter than the longest window \(60s\)/m,
  );
  assert.match(short.join("\n"), /^watch: canary, every 10s$/m);
});
