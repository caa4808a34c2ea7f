import assert from "node:assert/strict";
import { MemoryBudgetStore } from "../../src/budget/memory_store.ts";
import { periodsAt } from "../../src/budget/store.ts";
import { type AutopilotAction, type Counts, createAutopilot } from "../../src/control/autopilot.ts";
import type { MitigationName } from "../../src/control/mitigations.ts";
import { ControlView } from "../../src/control/view.ts";
import { snapshot } from "../support/control.ts";
import { testConfig } from "../support/gateway.ts";
import {
  counted,
  manualClock,
  messages,
  mitigationState,
  observed,
  withMitigation,
} from "./_helpers.ts";

const EDGE = "edge-1";
const INTERVAL_MS = 10_000;
/** Ticks in the default windows: provider_failover 5 min, voice_text 10 min. */
const PROVIDER_WINDOW = 30;
const VOICE_WINDOW = 60;

/** What one interval adds to the counters: [total, bad] per provider and for voice. */
interface Traffic {
  providers?: Record<string, [number, number]>;
  voice?: [number, number];
}

/** An action the fake aggregator accepted, and the tick (of that `run`) it came on. */
interface Sent {
  tick: number;
  mitigation: MitigationName;
  active: boolean;
  params?: Record<string, unknown>;
}

/**
 * An autopilot over fake counters and a fake aggregator that applies what it
 * is sent to the edge's view, as a poll would. `operator` mitigations are
 * active from the start, applied by a person. The first tick, at zero
 * traffic, starts the windows.
 */
async function setup(
  autopilot: Record<string, unknown>,
  opts: { capUsd?: number; operator?: Partial<Record<MitigationName, Record<string, unknown>>> } =
    {},
) {
  const clock = manualClock();
  const obs = observed(clock.now);
  const config = testConfig({
    control: { autopilot: { interval_ms: INTERVAL_MS, ...autopilot } },
    guardrails: { global_daily_cap_usd: opts.capUsd ?? 100 },
  });
  const view = new ControlView(
    config,
    snapshot({
      mitigations: Object.fromEntries(
        Object.entries(opts.operator ?? {}).map(([m, params]) => [m, mitigationState({ params })]),
      ),
    }),
  );
  // Providers a and b have counters from the start, as after the router's first attempts.
  const providers: Record<string, Counts> = { a: { bad: 0, total: 0 }, b: { bad: 0, total: 0 } };
  const voice: Counts = { bad: 0, total: 0 };
  const reads = { providers: 0, voice: 0 };
  const attempts: AutopilotAction[] = [];
  const accepted: AutopilotAction[] = [];
  const state = { failSends: 0 };
  const store = new MemoryBudgetStore(clock);
  const pilot = createAutopilot({
    config: config.control.autopilot,
    view,
    clock,
    ...obs,
    store,
    globalDailyCapUsd: config.guardrails.global_daily_cap_usd,
    providerCounts: () => (reads.providers++, structuredClone(providers)),
    voiceCounts: () => (reads.voice++, Promise.resolve({ ...voice })),
    send(action) {
      attempts.push(action);
      if (state.failSends > 0) {
        state.failSends--;
        return Promise.reject(new Error("aggregator unreachable"));
      }
      accepted.push(action);
      const held = action.active
        ? mitigationState({
          params: action.params ?? {},
          actor: "autopilot",
          reason: action.reason,
          sources: [EDGE],
        })
        : undefined;
      view.apply(withMitigation(view.snapshot, action.mitigation, held));
      return Promise.resolve();
    },
  });

  const add = (c: Counts, [total, bad]: [number, number]) => {
    c.total += total;
    c.bad += bad;
  };

  /** Runs `ticks` intervals of `traffic`; returns the actions accepted during them. */
  async function run(ticks: number, traffic: Traffic = {}): Promise<Sent[]> {
    const out: Sent[] = [];
    for (let tick = 1; tick <= ticks; tick++) {
      clock.advance(INTERVAL_MS);
      for (const [p, t] of Object.entries(traffic.providers ?? {})) {
        add(providers[p], t);
      }
      if (traffic.voice) add(voice, traffic.voice);
      const before = accepted.length;
      await pilot.tick();
      for (const a of accepted.slice(before)) {
        out.push({ tick, mitigation: a.mitigation, active: a.active, params: a.params });
      }
    }
    return out;
  }

  /** Sets today's managed spend against the global cap. */
  const spend = (usd: number) =>
    store.setSpend(
      { scope: "global", period: "day", bucket: periodsAt(clock.now()).day },
      usd * 1e6,
    );

  const applied = (mitigation: string) =>
    counted(obs.metrics.mitigationChanges, { mitigation, action: "apply", actor: "autopilot" });

  await pilot.tick();
  return { ...obs, view, run, spend, applied, attempts, accepted, reads, state };
}

const failover = (over: Record<string, unknown> = {}) => ({
  provider_failover: { enabled: true, ...over },
});
const avoid = (tick: number, provider: string): Sent => ({
  tick,
  mitigation: "avoid_provider",
  active: true,
  params: { provider },
});
const unavoid = (tick: number): Sent => ({
  tick,
  mitigation: "avoid_provider",
  active: false,
  params: undefined,
});

Deno.test("provider_failover waits for a full window before it acts", async () => {
  const s = await setup(failover());
  const failing = {
    providers: { a: [100, 10] as [number, number], b: [100, 0] as [number, number] },
  };
  assert.deepEqual(await s.run(PROVIDER_WINDOW - 1, failing), []);
  assert.deepEqual(await s.run(1, failing), [avoid(1, "a")]);
  assert.match(s.accepted[0].reason, /^autopilot: a error ratio 10\.0% over 300 s/);
  assert.equal(s.view.mitigation("avoid_provider")?.params.provider, "a");
  assert.equal(await s.applied("avoid_provider"), 1);
  assert.deepEqual(messages(s.lines, "warn"), ["autopilot"]);
});

Deno.test("provider_failover needs min_events attempts in the window", async () => {
  const s = await setup(failover({ min_events: 50 }));
  assert.deepEqual(await s.run(2 * PROVIDER_WINDOW, { providers: { a: [1, 1] } }), []);
  // A window of 30 ticks: 29 × 1 + 20 = 49 attempts, then 28 × 1 + 20 + 2 = 50.
  assert.deepEqual(await s.run(1, { providers: { a: [20, 20] } }), []);
  assert.deepEqual(await s.run(1, { providers: { a: [2, 2] } }), [avoid(1, "a")]);
});

Deno.test("provider_failover acts above the threshold only, on the worst provider", async () => {
  const s = await setup(failover());
  assert.deepEqual(await s.run(2 * PROVIDER_WINDOW, { providers: { a: [100, 2] } }), []);
  const worse = { providers: { a: [100, 5] as [number, number], b: [100, 9] as [number, number] } };
  const sent = await s.run(PROVIDER_WINDOW, worse);
  assert.deepEqual(sent.map((a) => a.params), [{ provider: "b" }]);
});

Deno.test("provider_failover does not revert while the ratio sits between 1% and 2%", async () => {
  const s = await setup(failover());
  assert.deepEqual(await s.run(PROVIDER_WINDOW, { providers: { a: [100, 10] } }), [avoid(30, "a")]);
  assert.deepEqual(await s.run(2 * PROVIDER_WINDOW, { providers: { a: [200, 3] } }), []);
  // 3 of 200 a tick over 30 ticks is 1.5%; each clean tick takes 3 errors out:
  // the window is at 1% after 10 of them.
  assert.deepEqual(await s.run(PROVIDER_WINDOW, { providers: { a: [200, 0] } }), [unavoid(10)]);
  assert.equal(s.view.mitigation("avoid_provider"), undefined);
  assert.match(s.accepted[1].reason, /^autopilot: a error ratio back under 1%/);
});

Deno.test("provider_failover holds a mitigation a whole window after applying it", async () => {
  const s = await setup(failover());
  assert.deepEqual(await s.run(PROVIDER_WINDOW, { providers: { a: [100, 3] } }), [avoid(30, "a")]);
  // Heavy clean traffic brings the window under 1% after 5 ticks, but the
  // mitigation stays until a window has passed since it was applied.
  assert.deepEqual(await s.run(PROVIDER_WINDOW, { providers: { a: [1_000, 0] } }), [
    unavoid(PROVIDER_WINDOW),
  ]);
});

Deno.test("provider_failover never lifts or replaces a mitigation an operator applied", async () => {
  const s = await setup(failover(), { operator: { avoid_provider: { provider: "a" } } });
  assert.deepEqual(await s.run(2 * PROVIDER_WINDOW, { providers: { a: [100, 0] } }), []);
  assert.deepEqual(await s.run(2 * PROVIDER_WINDOW, { providers: { b: [100, 50] } }), []);
  assert.equal(s.view.mitigation("avoid_provider")?.params.provider, "a");
  assert.deepEqual(s.attempts, []);
});

Deno.test("a failed send is logged, not counted, and retried on the next tick", async () => {
  const s = await setup(failover());
  s.state.failSends = 1;
  const failing = { providers: { a: [100, 10] as [number, number] } };
  assert.deepEqual(await s.run(PROVIDER_WINDOW, failing), []);
  assert.deepEqual(messages(s.lines, "error"), ["autopilot action failed"]);
  assert.equal(await s.applied("avoid_provider"), 0);
  assert.deepEqual(await s.run(1, failing), [avoid(1, "a")]);
  assert.equal(s.attempts.length, 2);
  assert.equal(await s.applied("avoid_provider"), 1);
});

const downgrade = (tick: number, active: boolean): Sent => ({
  tick,
  mitigation: "enforce_downgrade",
  active,
  params: undefined,
});

Deno.test("spend_downgrade applies above 80% of the daily cap and reverts below 70%", async () => {
  const s = await setup({ spend_downgrade: { enabled: true } });
  await s.spend(80);
  assert.deepEqual(await s.run(3), []);
  await s.spend(81);
  assert.deepEqual(await s.run(3), [downgrade(1, true)]);
  assert.match(s.accepted[0].reason, /managed spend at 81\.0% of the daily cap/);
  await s.spend(70);
  assert.deepEqual(await s.run(3), []);
  await s.spend(69.9);
  assert.deepEqual(await s.run(3), [downgrade(1, false)]);
  assert.equal(s.view.mitigation("enforce_downgrade"), undefined);
});

Deno.test("spend_downgrade leaves an operator's enforce_downgrade alone", async () => {
  const s = await setup({ spend_downgrade: { enabled: true } }, {
    operator: { enforce_downgrade: {} },
  });
  await s.spend(1);
  assert.deepEqual(await s.run(3), []);
  assert.ok(s.view.mitigation("enforce_downgrade"));
});

Deno.test("spend_downgrade does nothing without a global cap", async () => {
  const s = await setup({ spend_downgrade: { enabled: true } }, { capUsd: 0 });
  await s.spend(1_000);
  assert.deepEqual(await s.run(3), []);
});

Deno.test("voice_text applies on abnormal closes over 5% for a window, and reverts", async () => {
  const s = await setup({ voice_text: { enabled: true } });
  const voiceText = (tick: number, active: boolean): Sent => ({
    tick,
    mitigation: "voice_text",
    active,
    params: undefined,
  });
  assert.deepEqual(await s.run(VOICE_WINDOW - 1, { voice: [10, 1] }), []);
  assert.deepEqual(await s.run(1, { voice: [10, 1] }), [voiceText(1, true)]);
  assert.match(s.accepted[0].reason, /voice dropout 10\.0% over 600 s/);
  assert.ok(s.view.mitigation("voice_text"));
  // Clean sessions bring the window to 2.5% after 45 ticks; the hold lasts 60.
  assert.deepEqual(await s.run(VOICE_WINDOW, { voice: [10, 0] }), [
    voiceText(VOICE_WINDOW, false),
  ]);
});

Deno.test("voice_text stays off at exactly 5% and below min_events", async () => {
  const s = await setup({ voice_text: { enabled: true } });
  assert.deepEqual(await s.run(2 * VOICE_WINDOW, { voice: [20, 1] }), []);
  const few = await setup({ voice_text: { enabled: true, min_events: 100 } });
  assert.deepEqual(await few.run(2 * VOICE_WINDOW, { voice: [1, 1] }), []);
});

Deno.test("disabled detectors read nothing and do nothing", async () => {
  const s = await setup({});
  await s.spend(1_000);
  const awful: Traffic = { providers: { a: [100, 100] }, voice: [100, 100] };
  assert.deepEqual(await s.run(2 * VOICE_WINDOW, awful), []);
  assert.deepEqual(s.reads, { providers: 0, voice: 0 });
  assert.deepEqual(s.attempts, []);
});
