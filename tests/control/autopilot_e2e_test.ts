/**
 * The autopilot on the real app with injected faults: a flaky provider
 * (RB-1), managed spend near the global cap (RB-3) and voice sockets dropped
 * mid-session (RB-4). The timer never fires (interval of an hour): the test
 * ticks it and moves an injected clock across the detectors' windows.
 */
import assert from "node:assert/strict";
import { periodsAt } from "../../src/budget/store.ts";
import type { MockProviderConfig } from "../../src/config.ts";
import { freshPostgres } from "../support/db.ts";
import { startGateway, testConfig, type TestGateway } from "../support/gateway.ts";
import {
  ADMIN_USER,
  adminToken,
  audit,
  dropVoiceSocket,
  metric,
  mitigationState,
  mustApply,
  mustRevert,
  OffsetClock,
  served,
  waitUntil,
  withControlGateway,
} from "../support/control_e2e.ts";
import { connect, stopVoice, voiceStart } from "../voice/_voice_support.ts";

const WINDOW = 60_000;
const PRICE = { input_per_1m: 2, output_per_1m: 8 };
const VOICE = "voice-test";

type Detector = "provider_failover" | "spend_downgrade" | "voice_text";

/** Providers `flaky` (every 2nd call fails) and `steady` behind the default alias, in that order. */
function rawConfig(enabled: Detector): Record<string, unknown> {
  return {
    providers: {
      flaky: { protocol: "mock", fail: "unavailable", fail_every: 2 },
      steady: { protocol: "mock" },
      rt: { protocol: "realtime_mock" },
    },
    models: {
      "convergio-demo": {
        deployments: [
          { provider: "flaky", model: "flaky-large" },
          { provider: "steady", model: "steady-large" },
        ],
        price: PRICE,
      },
      "convergio-mini": {
        deployments: [{ provider: "steady", model: "steady-mini" }],
        price: { input_per_1m: 1, output_per_1m: 1 },
      },
      [VOICE]: {
        deployments: [{ provider: "rt", model: "rt-model" }],
        price: { input_per_1m: 32, output_per_1m: 64 },
      },
    },
    default_model: "convergio-demo",
    voice: { model: VOICE },
    // Every failure fails over at once, and no breaker hides the flaky provider.
    routing: { backoff_ms: 0, breaker: { failure_threshold: 1_000 } },
    tenants: { acme: { downgrade_model: "convergio-mini" } },
    guardrails: { global_daily_cap_usd: 100 },
    control: {
      autopilot: {
        interval_ms: 3_600_000,
        provider_failover: {
          enabled: enabled === "provider_failover",
          window_ms: WINDOW,
          min_events: 10,
        },
        spend_downgrade: { enabled: enabled === "spend_downgrade" },
        voice_text: { enabled: enabled === "voice_text", window_ms: WINDOW, min_events: 4 },
      },
    },
  };
}

interface Ctx {
  gw: TestGateway;
  clock: OffsetClock;
  admin: string;
  tick(): Promise<void>;
}

function withAutopilot(enabled: Detector, fn: (ctx: Ctx) => Promise<void>): Promise<void> {
  const clock = new OffsetClock();
  return withControlGateway(rawConfig(enabled), async (gw) => {
    assert.ok(gw.runtime.autopilot, "role all has an autopilot");
    await fn({ gw, clock, admin: await adminToken(gw), tick: () => gw.runtime.autopilot!.tick() });
  }, { clock });
}

/** `n` chats; the providers that served them. */
async function traffic(gw: TestGateway, n: number): Promise<string[]> {
  const token = await gw.token({ tenant: "acme" });
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push((await served(gw, token, { prompt: `hi ${i}` })).provider);
  return out;
}

const flakyAttempts = (gw: TestGateway) =>
  gw.deps.edge!.router.counters()["flaky/flaky-large"]?.attempts ?? 0;

Deno.test("RB-1 autopilot: a failing provider is avoided after a window, and released after another", async () => {
  await withAutopilot("provider_failover", async ({ gw, clock, admin, tick }) => {
    await traffic(gw, 2); // the counters exist
    await tick(); // first sample of the window
    const before = await traffic(gw, 20);
    assert.ok(
      before.includes("flaky") && before.includes("steady"),
      "flaky fails over half the time",
    );
    assert.equal(gw.deps.edge!.router.counters()["flaky/flaky-large"].errors, 11);

    clock.advance(WINDOW / 2);
    await tick();
    assert.equal(
      await mitigationState(gw, admin, "avoid_provider"),
      null,
      "half a window is not enough",
    );
    assert.equal((await audit(gw, admin, { actor: "autopilot" })).length, 0);

    clock.advance(WINDOW / 2);
    await tick();
    const state = await mitigationState(gw, admin, "avoid_provider");
    assert.ok(state, "avoid_provider applied after a full window");
    assert.deepEqual(state.params, { provider: "flaky" });
    assert.equal(state.actor, "autopilot");
    assert.equal(state.sources.length, 1, "held by this edge");
    const [applied] = await audit(gw, admin, { actor: "autopilot" });
    assert.equal(applied.action, "mitigation.apply");
    assert.equal(applied.target, "mitigation:avoid_provider");
    assert.equal(applied.before, null);
    assert.deepEqual((applied.after as { params: unknown }).params, { provider: "flaky" });
    assert.match(String(applied.reason), /flaky error ratio 50\.0%/);
    assert.equal(
      await metric(gw, "convergio_mitigation_changes_total", {
        mitigation: "avoid_provider",
        action: "apply",
        actor: "autopilot",
      }),
      1,
    );

    // Traffic now goes to steady first: flaky gets no attempt at all.
    const attempts = flakyAttempts(gw);
    assert.deepEqual(await traffic(gw, 6), Array(6).fill("steady"));
    assert.equal(flakyAttempts(gw), attempts);

    // The provider heals (the mock reads its config on every call).
    (gw.deps.config.providers.flaky as MockProviderConfig).fail = "none";
    clock.advance(WINDOW / 2);
    await tick();
    assert.ok(await mitigationState(gw, admin, "avoid_provider"), "held for a whole window first");

    clock.advance(WINDOW / 2);
    await tick();
    assert.equal(await mitigationState(gw, admin, "avoid_provider"), null, "released");
    const rows = await audit(gw, admin, { actor: "autopilot" });
    assert.deepEqual(rows.map((r) => r.action), ["mitigation.revert", "mitigation.apply"]);
    assert.equal(rows[0].target, "mitigation:avoid_provider");
    assert.match(String(rows[0].reason), /back under 1%/);
    assert.equal(rows[0].after, null);
    assert.deepEqual(rows[0].before, rows[1].after);
    // Priority order again, and flaky serves (healthy now).
    assert.deepEqual(await traffic(gw, 4), Array(4).fill("flaky"));
  });
});

Deno.test("RB-1 autopilot never takes over or lifts an operator's avoid_provider", async () => {
  await withAutopilot("provider_failover", async ({ gw, clock, admin, tick }) => {
    await mustApply(gw, admin, "avoid_provider", {
      params: { provider: "steady" },
      reason: "operator: steady is on probation",
    });
    await traffic(gw, 2);
    await tick();
    // Steady is avoided, so every request tries flaky first: it fails half the time.
    await traffic(gw, 20);
    clock.advance(WINDOW);
    await tick();
    (gw.deps.config.providers.flaky as MockProviderConfig).fail = "none";
    for (let i = 0; i < 3; i++) {
      clock.advance(WINDOW);
      await tick();
    }
    const state = await mitigationState(gw, admin, "avoid_provider");
    assert.deepEqual(state?.params, { provider: "steady" }, "not switched to the failing one");
    assert.equal(state.actor, ADMIN_USER);
    assert.deepEqual(state.sources, []);
    assert.deepEqual(await audit(gw, admin, { actor: "autopilot" }), []);
  });
});

Deno.test("RB-1 autopilot: an operator who re-applies the autopilot's mitigation keeps it", async () => {
  await withAutopilot("provider_failover", async ({ gw, clock, admin, tick }) => {
    await traffic(gw, 2);
    await tick();
    await traffic(gw, 20);
    clock.advance(WINDOW);
    await tick();
    assert.equal((await mitigationState(gw, admin, "avoid_provider"))?.actor, "autopilot");

    await mustApply(gw, admin, "avoid_provider", {
      params: { provider: "flaky" },
      reason: "operator: keep flaky out until the vendor confirms",
    });
    (gw.deps.config.providers.flaky as MockProviderConfig).fail = "none";
    clock.advance(WINDOW);
    await tick();
    await traffic(gw, 3);
    clock.advance(WINDOW);
    await tick();
    const state = await mitigationState(gw, admin, "avoid_provider");
    assert.ok(state, "still on: the operator owns it now");
    assert.equal(state.actor, ADMIN_USER);
    assert.deepEqual(state.sources, []);
    assert.deepEqual(await traffic(gw, 3), Array(3).fill("steady"));

    // The operator lifts it; the autopilot does not put it back on healthy traffic.
    await mustRevert(gw, admin, "avoid_provider", "operator: vendor confirmed the fix");
    await traffic(gw, 5);
    clock.advance(WINDOW);
    await tick();
    assert.equal(await mitigationState(gw, admin, "avoid_provider"), null);
  });
});

const globalDay = (clock: OffsetClock) => ({
  scope: "global" as const,
  period: "day" as const,
  bucket: periodsAt(clock.now()).day,
});

Deno.test("RB-3 autopilot: managed spend over 80% of the daily cap enforces downgrades until under 70%", async () => {
  await withAutopilot("spend_downgrade", async ({ gw, clock, admin, tick }) => {
    const store = gw.deps.edge!.store;
    const managed = await gw.token({ tenant: "acme", mode: "managed" });
    const byok = await gw.token({ tenant: "acme", mode: "byok" });

    await store.setSpend(globalDay(clock), 50_000_000);
    await tick();
    assert.equal(await mitigationState(gw, admin, "enforce_downgrade"), null, "50% is fine");

    await store.setSpend(globalDay(clock), 85_000_000);
    // Spend alone downgrades nobody below 90%: the mitigation does it.
    assert.equal((await served(gw, managed)).model, "convergio-demo");
    await tick();
    const state = await mitigationState(gw, admin, "enforce_downgrade");
    assert.equal(state?.actor, "autopilot");
    const [applied] = await audit(gw, admin, { actor: "autopilot" });
    assert.equal(applied.action, "mitigation.apply");
    assert.equal(applied.target, "mitigation:enforce_downgrade");
    assert.match(String(applied.reason), /managed spend at 85\.\d% of the daily cap/);
    const m = await served(gw, managed);
    assert.equal(m.model, "convergio-mini");
    assert.equal(m.downgradedFrom, "convergio-demo");
    assert.equal((await served(gw, byok)).model, "convergio-demo", "BYOK untouched");

    // Between the thresholds: hysteresis keeps it.
    await store.setSpend(globalDay(clock), 75_000_000);
    await tick();
    assert.ok(await mitigationState(gw, admin, "enforce_downgrade"));

    await store.setSpend(globalDay(clock), 60_000_000);
    await tick();
    assert.equal(await mitigationState(gw, admin, "enforce_downgrade"), null);
    const rows = await audit(gw, admin, { actor: "autopilot" });
    assert.deepEqual(rows.map((r) => [r.action, r.target]), [
      ["mitigation.revert", "mitigation:enforce_downgrade"],
      ["mitigation.apply", "mitigation:enforce_downgrade"],
    ]);
    assert.match(String(rows[0].reason), /back under 70%/);
    assert.equal((await served(gw, managed)).model, "convergio-demo");
  });
});

Deno.test("RB-3 autopilot leaves an operator's enforce_downgrade alone when spend falls", async () => {
  await withAutopilot("spend_downgrade", async ({ gw, clock, admin, tick }) => {
    await mustApply(gw, admin, "enforce_downgrade", { reason: "operator: finance asked" });
    await gw.deps.edge!.store.setSpend(globalDay(clock), 90_000_000);
    await tick();
    await gw.deps.edge!.store.setSpend(globalDay(clock), 10_000_000);
    await tick();
    assert.equal((await mitigationState(gw, admin, "enforce_downgrade"))?.actor, ADMIN_USER);
    assert.deepEqual(await audit(gw, admin, { actor: "autopilot" }), []);
  });
});

Deno.test("RB-4 autopilot: voice sockets dropped mid-session switch voice to text, then back", async () => {
  await withAutopilot("voice_text", async ({ gw, clock, admin, tick }) => {
    const token = await gw.token({ tenant: "acme", mode: "managed" });
    const dropouts = () => metric(gw, "convergio_ws_dropouts_total", { kind: "voice" });
    await tick(); // the window's first sample: no sessions yet

    // Two sessions end cleanly, two lose their connection (no close frame: 1006).
    for (const id of ["ok-1", "ok-2"]) {
      const { c } = await connect(gw, token);
      c.send(voiceStart(id));
      await c.nextOf("voice.ready", id);
      await stopVoice(c, id);
      await c.close(1000);
    }
    await dropVoiceSocket(gw, token);
    await dropVoiceSocket(gw, token);
    await waitUntil(async () => (await dropouts()) === 2, "two voice dropouts counted");
    // Deno reports a cut connection as code 0; it is counted as the abnormal closure it is.
    assert.equal(
      await metric(gw, "convergio_ws_dropouts_total", { kind: "voice", reason: "abnormal_1006" }),
      2,
    );
    assert.equal(await metric(gw, "convergio_ws_dropouts_total", { reason: "1000" }), 0);
    assert.equal(await metric(gw, "convergio_ws_sessions_total", { kind: "voice" }), 4);

    clock.advance(WINDOW / 2);
    await tick();
    assert.equal(await mitigationState(gw, admin, "voice_text"), null, "half a window");
    clock.advance(WINDOW / 2);
    await tick();
    const state = await mitigationState(gw, admin, "voice_text");
    assert.equal(state?.actor, "autopilot");
    const [applied] = await audit(gw, admin, { actor: "autopilot" });
    assert.equal(applied.target, "mitigation:voice_text");
    assert.match(String(applied.reason), /voice dropout 50\.0%/);

    const { c } = await connect(gw, token);
    try {
      c.send(voiceStart("during"));
      const degraded = await c.nextOf("voice.degraded", "during");
      assert.equal(degraded.mode, "text-only");

      // No more dropouts: released once it has been held a whole window.
      clock.advance(WINDOW / 2);
      await tick();
      assert.ok(await mitigationState(gw, admin, "voice_text"), "held for a whole window first");
      clock.advance(WINDOW / 2);
      await tick();
      assert.equal(await mitigationState(gw, admin, "voice_text"), null);
      const rows = await audit(gw, admin, { actor: "autopilot" });
      assert.deepEqual(rows.map((r) => r.action), ["mitigation.revert", "mitigation.apply"]);

      c.send(voiceStart("after"));
      await c.nextOf("voice.ready", "after");
      await stopVoice(c, "after");
    } finally {
      await c.close();
    }
    assert.equal(await dropouts(), 2);
  });
});

Deno.test("RB-3 autopilot on two edges: both hold the mitigation; it ends when the last withdraws", async () => {
  const pg = await freshPostgres();
  const dirs = await Promise.all(
    [0, 1, 2].map(() => Deno.makeTempDir({ prefix: "cvg-autopilot-" })),
  );
  const gateways: TestGateway[] = [];
  try {
    const aggregator = await startGateway(testConfig({
      role: "aggregator",
      data_dir: dirs[0],
      database_url: pg.url,
      metering: { secret: "two-edges-secret" },
    }));
    gateways.push(aggregator);
    const edgeConfig = (dir: string) =>
      testConfig({
        role: "edge",
        data_dir: dir,
        metering: { aggregator_url: aggregator.url, secret: "two-edges-secret" },
        // An edge sees the other's change only when the test makes it poll.
        control: {
          poll_interval_ms: 3_600_000,
          autopilot: { interval_ms: 3_600_000, spend_downgrade: { enabled: true } },
        },
      });
    // Each edge has a budget store of its own: each sees its own spend.
    const a = await startGateway(edgeConfig(dirs[1]), { meter: undefined });
    gateways.push(a);
    const b = await startGateway(edgeConfig(dirs[2]), { meter: undefined });
    gateways.push(b);
    const admin = await adminToken(aggregator);
    const day = {
      scope: "global" as const,
      period: "day" as const,
      bucket: periodsAt(Date.now()).day,
    };
    const state = () => mitigationState(aggregator, admin, "enforce_downgrade");

    await a.deps.edge!.store.setSpend(day, 85_000_000);
    await b.deps.edge!.store.setSpend(day, 90_000_000);
    await a.runtime.autopilot!.tick();
    await b.runtime.autopilot!.tick(); // before it has polled A's change
    const held = await state();
    assert.equal(held?.actor, "autopilot");
    assert.equal(held.sources.length, 2, "both edges hold it");

    await a.deps.edge!.store.setSpend(day, 10_000_000);
    await a.runtime.autopilot!.tick();
    const left = await state();
    assert.ok(left, "still on while the other edge holds it");
    assert.equal(left.sources.length, 1);
    assert.ok(held.sources.includes(left.sources[0]));

    await b.deps.edge!.store.setSpend(day, 10_000_000);
    await b.runtime.autopilot!.tick();
    assert.equal(await state(), null, "the last withdrawal ends it");
    const rows = await audit(aggregator, admin, { target: "mitigation:enforce_downgrade" });
    assert.deepEqual(rows.map((r) => [r.action, r.actor]), [
      ["mitigation.revert", "autopilot"],
      ["mitigation.revert", "autopilot"],
      ["mitigation.apply", "autopilot"],
      ["mitigation.apply", "autopilot"],
    ]);
  } finally {
    for (const gw of gateways.reverse()) await gw.close();
    await pg.drop();
    for (const dir of dirs) await Deno.remove(dir, { recursive: true });
  }
});
