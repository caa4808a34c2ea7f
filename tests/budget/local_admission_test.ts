/**
 * LocalAdmission in front of the memory store (the same contract as Redis),
 * with a fake clock: which admissions skip the store, how charges land, and
 * that every limit near its edge is decided by the store.
 */
import assert from "node:assert/strict";
import { LocalAdmission } from "../../src/budget/local_admission.ts";
import { MemoryBudgetStore } from "../../src/budget/memory_store.ts";
import {
  type AdmitInput,
  type AdmitResult,
  type BudgetStore,
  type BurstLimits,
  type Periods,
  requestScopes,
  type SpendBudgets,
} from "../../src/budget/store.ts";

const PERIODS: Periods = { day: "20261127", month: "202611" };
const ROOMY: BurstLimits = { rpm: 1000, tpm: 1_000_000, user_rpm: 1000, user_tpm: 1_000_000 };
const NO_BUDGETS: SpendBudgets = {
  tenant_day: 0,
  tenant_month: 0,
  user_day: 0,
  user_month: 0,
  global_day: 0,
};

type Ok = Extract<AdmitResult, { ok: true }>;

function assertOk(r: AdmitResult): Ok {
  assert.equal(r.ok, true, `expected admission, got ${JSON.stringify(r)}`);
  return r as Ok;
}

/** The memory store, counting the admissions that reach it. */
function harness(opts: { freshMs?: number; maxInFlight?: number } = {}) {
  let now = Date.UTC(2026, 10, 27, 12);
  const clock = { now: () => now };
  const inner = new MemoryBudgetStore(clock);
  const calls: AdmitInput[] = [];
  const counting: BudgetStore = {
    admit(input) {
      calls.push(input);
      return inner.admit(input);
    },
    settle: (i) => inner.settle(i),
    setOverride: (o) => inner.setOverride(o),
    getOverride: (t) => inner.getOverride(t),
    clearOverride: (t) => inner.clearOverride(t),
    spend: (s) => inner.spend(s),
    setSpend: (s, m) => inner.setSpend(s, m),
    correctSpend: (s, d) => inner.correctSpend(s, d),
  };
  const store = new LocalAdmission(counting, {
    clock,
    freshMs: opts.freshMs ?? 1000,
    maxInFlight: opts.maxInFlight ?? 32,
  });
  return { store, inner, calls, advance: (ms: number) => now += ms };
}

function input(over: Partial<AdmitInput> = {}): AdmitInput {
  return { tenant: "t1", user: "u1", periods: PERIODS, limits: ROOMY, tokens: 10, ...over };
}

function managed(budgets: Partial<SpendBudgets>, reserve: number): AdmitInput["spend"] {
  return { budgets: { ...NO_BUDGETS, ...budgets }, reserve, reserve_downgraded: 0 };
}

Deno.test("the first admission asks the store; the next ones are local and charge actual usage after", async () => {
  const { store, inner, calls } = harness();
  const spend = managed({ tenant_day: 1_000_000 }, 100);
  const first = assertOk(await store.admit(input({ spend })));
  assert.equal(first.charge, undefined);
  assert.equal(calls.length, 1);

  const second = assertOk(await store.admit(input({ spend })));
  assert.equal(calls.length, 1, "no round trip before the provider call");
  assert.ok(second.charge);
  assert.equal(second.reserved, 100);
  assert.equal(second.rate.requests.remaining, first.rate.requests.remaining - 1);
  assert.equal(second.rate.tokens.remaining, first.rate.tokens.remaining - 10);
  assert.deepEqual(second.spent, [200, 200, 200, 200, 200]);

  const charged = assertOk(await second.charge!(7, 30));
  assert.equal(calls.length, 2);
  assert.equal(calls[1].force, true);
  assert.equal(calls[1].tokens, 7);
  assert.equal(calls[1].spend?.reserve, 30);
  // The store has the first reservation and the second request's actual cost.
  assert.deepEqual(charged.spent, [130, 130, 130, 130, 130]);
  assert.deepEqual(await inner.spend(requestScopes("t1", "u1", PERIODS)), charged.spent);
});

Deno.test("a view older than fresh_ms is asked again, and a charge refreshes it", async () => {
  const { store, calls, advance } = harness({ freshMs: 1000 });
  await store.admit(input());
  advance(999);
  const local = assertOk(await store.admit(input()));
  assert.equal(calls.length, 1);
  advance(2);
  await store.admit(input());
  assert.equal(calls.length, 2, "stale: asked the store");
  advance(900);
  await local.charge!(10, 0);
  advance(900);
  assert.ok(assertOk(await store.admit(input())).charge, "the charge's answer was fresh");
  assert.equal(calls.length, 3);
});

Deno.test("at most max_in_flight local admissions wait for their charge", async () => {
  const { store, calls } = harness({ maxInFlight: 2 });
  await store.admit(input());
  const a = assertOk(await store.admit(input()));
  const b = assertOk(await store.admit(input()));
  assert.ok(a.charge && b.charge);
  assert.equal(calls.length, 1);
  assert.equal(assertOk(await store.admit(input())).charge, undefined, "third asks the store");
  await a.charge!(10, 0);
  assert.ok(assertOk(await store.admit(input())).charge);
});

Deno.test("near the rate limit every request asks the store, which refuses exactly at the limit", async () => {
  const { store, calls } = harness();
  const limits = { ...ROOMY, rpm: 20, user_rpm: 20 };
  const results: AdmitResult[] = [];
  for (let i = 0; i < 21; i++) {
    const r = await store.admit(input({ limits }));
    results.push(r);
    if (r.ok && r.charge) await r.charge(10, 0);
  }
  assert.equal(results.filter((r) => r.ok).length, 20);
  assert.equal(results[20].ok, false);
  // The last local admission leaves 2 (10% of 20); from there on the store decides.
  assert.ok(results[17].ok && results[17].charge && results[17].rate.requests.remaining === 2);
  assert.ok(results.slice(18).every((r) => !r.ok || r.charge === undefined));
  assert.ok(calls.length > 20, "local admissions were charged, the tail was asked");
});

Deno.test("tokens: a request that would eat into the last 10% of the window asks the store", async () => {
  const { store } = harness();
  const limits = { ...ROOMY, tpm: 1000, user_tpm: 1000 };
  await store.admit(input({ limits, tokens: 100 }));
  assert.ok(assertOk(await store.admit(input({ limits, tokens: 700 }))).charge);
  // 900 - 700 - 101 = 99 left, under 100.
  assert.equal(assertOk(await store.admit(input({ limits, tokens: 101 }))).charge, undefined);
});

Deno.test("spend: local admission stops before the 80% alert, so alerts and downgrades come from the store", async () => {
  const { store } = harness();
  const spend = managed({ tenant_month: 1000 }, 100);
  await store.admit(input({ spend }));
  for (let i = 0; i < 6; i++) assertOk(await store.admit(input({ spend })));
  // 100 reserved + 6 × 100 pending = 700; the next would reach 800 (80%).
  const asked = assertOk(await store.admit(input({ spend })));
  assert.equal(asked.charge, undefined);
  assert.deepEqual(asked.alerts, []);
  assert.equal(asked.spent[1], 200, "the store holds only what it was asked to reserve");
});

Deno.test("spend: the global cap keeps a 10% margin; BYOK views ignore spend", async () => {
  const { store } = harness();
  const spend = managed({ global_day: 1000 }, 400);
  await store.admit(input({ spend }));
  assert.ok(assertOk(await store.admit(input({ spend }))).charge, "400 + 400 < 900");
  assert.equal(assertOk(await store.admit(input({ spend }))).charge, undefined);

  await store.admit(input({ user: "b" }));
  assert.ok(assertOk(await store.admit(input({ user: "b" }))).charge);
});

Deno.test("a refusal or a downgrade makes the next request ask the store again", async () => {
  const { store, calls } = harness({ freshMs: 60_000 });
  const limits = { ...ROOMY, rpm: 1, user_rpm: 1 };
  assertOk(await store.admit(input({ tenant: "t2", limits })));
  const refused = await store.admit(input({ tenant: "t2", limits }));
  assert.equal(refused.ok, false);
  const again = await store.admit(input({ tenant: "t2", limits }));
  assert.equal(again.ok, false);
  assert.equal(calls.length, 3);

  const down = {
    budgets: { ...NO_BUDGETS, tenant_day: 1000 },
    reserve: 10,
    reserve_downgraded: 1,
  };
  await store.inner.setSpend(
    { scope: "tenant", id: "t3", period: "day", bucket: PERIODS.day },
    950,
  );
  const downgraded = assertOk(await store.admit(input({ tenant: "t3", spend: down })));
  assert.equal(downgraded.downgraded, true);
  assert.equal(assertOk(await store.admit(input({ tenant: "t3", spend: down }))).charge, undefined);
});

Deno.test("a failed charge or a failed admission makes the next request ask the store", async () => {
  const { store, calls, inner } = harness({ freshMs: 60_000 });
  await store.admit(input());
  const local = assertOk(await store.admit(input()));
  const realAdmit = inner.admit.bind(inner);
  let down = true;
  inner.admit = (i) => down ? Promise.reject(new Error("store down")) : realAdmit(i);
  await assert.rejects(local.charge!(10, 0), /store down/);
  await assert.rejects(store.admit(input()), /store down/, "asked the store, which is down");
  down = false;
  await store.admit(input());
  assert.ok(assertOk(await store.admit(input())).charge, "fresh again after a good answer");

  inner.admit = () => Promise.reject(new Error("store down"));
  await assert.rejects(store.admit(input({ tokens: 1_000_000 })), /store down/);
  await assert.rejects(store.admit(input()), /store down/, "the failed admission dropped the view");
  assert.ok(calls.length >= 5);
});

Deno.test("views of idle users are swept once there are many", async () => {
  const { store, advance } = harness({ freshMs: 1000 });
  for (let i = 0; i < 1100; i++) assertOk(await store.admit(input({ tenant: `t${i}` })));
  assert.equal(store.size, 1100);
  advance(1001);
  const busy = assertOk(await store.admit(input({ tenant: "t1" })));
  assert.equal(busy.charge, undefined);
  await store.admit(input({ tenant: "new" }));
  assert.equal(store.size, 2, "only the views answered within fresh_ms are kept");
});

Deno.test("everything but admission passes through to the shared store", async () => {
  const { store, inner } = harness();
  const s = { scope: "tenant" as const, id: "t1", period: "day" as const, bucket: PERIODS.day };
  await store.setSpend(s, 50);
  await store.correctSpend(s, 5);
  assert.deepEqual(await store.spend([s]), [55]);
  assert.deepEqual(await inner.spend([s]), [55]);
  const override = { tenant_id: "t1", reason: "r", by: "a", expires_at: Date.UTC(2027, 0, 1) };
  await store.setOverride(override);
  assert.deepEqual(await store.getOverride("t1"), override);
  await store.clearOverride("t1");
  assert.equal(await store.getOverride("t1"), null);
  await store.settle({
    tenant: "t1",
    user: "u1",
    periods: PERIODS,
    limits: ROOMY,
    token_delta: 0,
    spend_delta: 7,
  });
  assert.deepEqual(await inner.spend([s]), [62]);
});
