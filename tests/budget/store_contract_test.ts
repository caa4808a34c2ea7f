/**
 * One contract for both budget stores: MemoryBudgetStore, and RedisBudgetStore
 * talking through the REST bridge to the real Redis on 127.0.0.1:6379 (a
 * unique key prefix per test, so tests never collide).
 */
import assert from "node:assert/strict";
import { createClient } from "redis";
import { startBridge } from "../../scripts/redis-rest-bridge.ts";
import { buildConfigSchema } from "../../src/config.ts";
import { MemoryBudgetStore } from "../../src/budget/memory_store.ts";
import { RedisBudgetStore } from "../../src/budget/redis_store.ts";
import {
  type AdmitInput,
  type AdmitResult,
  type BudgetStore,
  type BurstLimits,
  type Periods,
  periodsAt,
  requestScopes,
  type SpendBudgets,
  type SpendScope,
} from "../../src/budget/store.ts";

const REDIS_URL = "redis://127.0.0.1:6379";
const PERIODS: Periods = { day: "20261126", month: "202611" };
const NEXT_DAY: Periods = { day: "20261127", month: "202611" };
const NEXT_MONTH: Periods = { day: "20261201", month: "202612" };
/** Roomy burst limits, for tests about spend. */
const ROOMY: BurstLimits = { rpm: 1000, tpm: 1_000_000, user_rpm: 1000, user_tpm: 1_000_000 };
const NO_BUDGETS: SpendBudgets = {
  tenant_day: 0,
  tenant_month: 0,
  user_day: 0,
  user_month: 0,
  global_day: 0,
};
/** Allowed drift of retry_after_ms: Redis uses its own TIME, a few ms later than the call. */
const RETRY_TOLERANCE_MS = 1000;

interface Harness {
  store: BudgetStore;
  close(): Promise<void>;
}

function memoryHarness(): Promise<Harness> {
  const t = Date.now();
  return Promise.resolve({
    store: new MemoryBudgetStore({ now: () => t }),
    close: () => Promise.resolve(),
  });
}

async function redisHarness(): Promise<Harness> {
  const token = `tok-${crypto.randomUUID()}`;
  const prefix = `ct:${crypto.randomUUID()}`;
  const bridge = await startBridge({ port: 0, token, redisUrl: REDIS_URL });
  const cfg = buildConfigSchema({}).parse({
    providers: {},
    models: {},
    guardrails: {
      store: "redis",
      redis: { url: bridge.url, token, prefix, timeout_ms: 5000 },
    },
  });
  const store = RedisBudgetStore.fromConfig(cfg.guardrails.redis);
  return {
    store,
    async close() {
      const client = createClient({ url: REDIS_URL });
      client.on("error", () => {});
      try {
        await client.connect();
        for await (const batch of client.scanIterator({ MATCH: `${prefix}:*`, COUNT: 100 })) {
          if (batch.length > 0) await client.del(batch);
        }
      } finally {
        await client.close().catch(() => {});
        await bridge.close();
      }
    },
  };
}

const STORES: Array<[string, () => Promise<Harness>]> = [
  ["memory", memoryHarness],
  ["redis", redisHarness],
];

function input(over: Partial<AdmitInput> = {}): AdmitInput {
  return { tenant: "t1", user: "u1", periods: PERIODS, limits: ROOMY, tokens: 0, ...over };
}

function managed(
  budgets: Partial<SpendBudgets>,
  reserve: number,
  reserve_downgraded = 0,
): AdmitInput["spend"] {
  return { budgets: { ...NO_BUDGETS, ...budgets }, reserve, reserve_downgraded };
}

type Ok = Extract<AdmitResult, { ok: true }>;

function assertOk(r: AdmitResult): Ok {
  assert.equal(r.ok, true, `expected admission, got ${JSON.stringify(r)}`);
  return r as Ok;
}

function assertNear(actual: number, expected: number, tolerance: number) {
  assert.ok(
    Math.abs(actual - expected) <= tolerance,
    `${actual} is not within ${tolerance} of ${expected}`,
  );
}

const scope = {
  tenantDay: (tenant = "t1", periods = PERIODS): SpendScope => ({
    scope: "tenant",
    id: tenant,
    period: "day",
    bucket: periods.day,
  }),
  tenantMonth: (tenant = "t1", periods = PERIODS): SpendScope => ({
    scope: "tenant",
    id: tenant,
    period: "month",
    bucket: periods.month,
  }),
  userDay: (tenant = "t1", user = "u1"): SpendScope => ({
    scope: "user",
    tenant,
    id: user,
    period: "day",
    bucket: PERIODS.day,
  }),
  global: (periods = PERIODS): SpendScope => ({
    scope: "global",
    period: "day",
    bucket: periods.day,
  }),
};

for (const [name, make] of STORES) {
  const test = (title: string, fn: (store: BudgetStore) => Promise<void>) =>
    Deno.test(`${name}: ${title}`, async () => {
      const h = await make();
      try {
        await fn(h.store);
      } finally {
        await h.close();
      }
    });

  // --- requests per minute ------------------------------------------------

  test("rpm: three admits at rpm 3 leave 2, 1, 0; the fourth is refused with retry ~20 s", async (store) => {
    const limits = { ...ROOMY, rpm: 3, user_rpm: 3 };
    for (const remaining of [2, 1, 0]) {
      const r = assertOk(await store.admit(input({ limits })));
      assert.equal(r.rate.requests.limit, 3);
      assert.equal(r.rate.requests.remaining, remaining);
      assert.ok(r.rate.requests.reset_ms > 0);
    }
    const refused = await store.admit(input({ limits }));
    assert.equal(refused.ok, false);
    assert.ok(!refused.ok && refused.reason === "requests", JSON.stringify(refused));
    assert.ok(refused.retry_after_ms > 0);
    assertNear(refused.retry_after_ms, 20_000, RETRY_TOLERANCE_MS);
    assert.equal(refused.rate.requests.remaining, 0);
    assert.equal(refused.rate.requests.limit, 3);
  });

  test("rpm: a tighter user_rpm limits one user but not another user of the tenant", async (store) => {
    const limits = { ...ROOMY, rpm: 10, user_rpm: 2 };
    assertOk(await store.admit(input({ limits, user: "alice" })));
    const second = assertOk(await store.admit(input({ limits, user: "alice" })));
    // The user's bucket is the tighter one, so it is the one reported.
    assert.deepEqual([second.rate.requests.limit, second.rate.requests.remaining], [2, 0]);
    const refused = await store.admit(input({ limits, user: "alice" }));
    assert.ok(!refused.ok && refused.reason === "requests", JSON.stringify(refused));
    assertNear(refused.retry_after_ms, 30_000, RETRY_TOLERANCE_MS);

    const bob = assertOk(await store.admit(input({ limits, user: "bob" })));
    assert.deepEqual([bob.rate.requests.limit, bob.rate.requests.remaining], [2, 1]);
    assertOk(await store.admit(input({ limits, user: "bob" })));
    // Another tenant's users are not touched either.
    assertOk(await store.admit(input({ limits, tenant: "t2", user: "alice" })));
  });

  test("rpm: the tenant bucket is shared by all users", async (store) => {
    const limits = { ...ROOMY, rpm: 3, user_rpm: 10 };
    assertOk(await store.admit(input({ limits, user: "a" })));
    assertOk(await store.admit(input({ limits, user: "b" })));
    const third = assertOk(await store.admit(input({ limits, user: "c" })));
    assert.deepEqual([third.rate.requests.limit, third.rate.requests.remaining], [3, 0]);
    const refused = await store.admit(input({ limits, user: "d" }));
    assert.ok(!refused.ok && refused.reason === "requests", JSON.stringify(refused));
    assertNear(refused.retry_after_ms, 20_000, RETRY_TOLERANCE_MS);
    // Another tenant has its own bucket.
    assertOk(await store.admit(input({ limits, tenant: "t2", user: "a" })));
  });

  // --- tokens per minute --------------------------------------------------

  test("tpm: tokens are taken; a request needing more than remain is refused with reason tokens", async (store) => {
    const limits = { ...ROOMY, tpm: 100, user_tpm: 100 };
    const first = assertOk(await store.admit(input({ limits, tokens: 40 })));
    assert.deepEqual([first.rate.tokens.limit, first.rate.tokens.remaining], [100, 60]);
    const second = assertOk(await store.admit(input({ limits, tokens: 40 })));
    assert.equal(second.rate.tokens.remaining, 20);
    const refused = await store.admit(input({ limits, tokens: 40 }));
    assert.ok(!refused.ok && refused.reason === "tokens", JSON.stringify(refused));
    assert.ok(refused.retry_after_ms > 0);
    // 20 tokens short at 100 a minute.
    assertNear(refused.retry_after_ms, 12_000, RETRY_TOLERANCE_MS);
    assert.equal(refused.rate.tokens.remaining, 20);
    // A refused request takes nothing: a smaller one still fits.
    const small = assertOk(await store.admit(input({ limits, tokens: 20 })));
    assert.equal(small.rate.tokens.remaining, 0);
  });

  test("tpm: the user bucket refuses one user while another user of the tenant passes", async (store) => {
    const limits = { ...ROOMY, tpm: 1000, user_tpm: 50 };
    assertOk(await store.admit(input({ limits, user: "a", tokens: 50 })));
    const refused = await store.admit(input({ limits, user: "a", tokens: 10 }));
    assert.ok(!refused.ok && refused.reason === "tokens", JSON.stringify(refused));
    const b = assertOk(await store.admit(input({ limits, user: "b", tokens: 10 })));
    assert.deepEqual([b.rate.tokens.limit, b.rate.tokens.remaining], [50, 40]);
  });

  test("tpm: settle with a negative token_delta refunds, never above the cap; a positive one charges", async (store) => {
    const limits = { ...ROOMY, tpm: 100, user_tpm: 100 };
    const settle = (token_delta: number) =>
      store.settle({
        tenant: "t1",
        user: "u1",
        periods: PERIODS,
        limits,
        token_delta,
        spend_delta: 0,
      });
    assertOk(await store.admit(input({ limits, tokens: 80 })));
    await settle(-30); // used 50 of the 80 taken
    const probe1 = assertOk(await store.admit(input({ limits, tokens: 0 })));
    assert.equal(probe1.rate.tokens.remaining, 50);

    await settle(10); // used 10 more than taken
    const probe2 = assertOk(await store.admit(input({ limits, tokens: 0 })));
    assert.equal(probe2.rate.tokens.remaining, 40);

    await settle(-10_000);
    const probe3 = assertOk(await store.admit(input({ limits, tokens: 0 })));
    assert.equal(probe3.rate.tokens.remaining, 100);
    assert.equal(probe3.rate.tokens.limit, 100);
  });

  // --- spend (managed lane) -----------------------------------------------

  test("spend: the reserve is added to all five counters, and fraction is before the reservation", async (store) => {
    const scopes = requestScopes("t1", "u1", PERIODS);
    assert.deepEqual(await store.spend(scopes), [0, 0, 0, 0, 0]);
    const budgets = {
      tenant_day: 10_000,
      tenant_month: 100_000,
      user_day: 20_000,
      user_month: 200_000,
      global_day: 1_000_000,
    };
    const first = assertOk(await store.admit(input({ spend: managed(budgets, 1000, 100) })));
    assert.equal(first.fraction, 0);
    assert.equal(first.downgraded, false);
    assert.equal(first.reserved, 1000);
    assert.deepEqual(first.alerts, []);
    assert.deepEqual(await store.spend(scopes), [1000, 1000, 1000, 1000, 1000]);

    const second = assertOk(await store.admit(input({ spend: managed(budgets, 1000, 100) })));
    assert.equal(second.fraction, 0.1); // 1000 of the tenant's 10 000 a day, before this request
    assert.equal(second.reserved, 1000);
    assert.deepEqual(await store.spend(scopes), [2000, 2000, 2000, 2000, 2000]);

    // Another user of the tenant shares the tenant and global counters only.
    assertOk(await store.admit(input({ user: "u2", spend: managed(budgets, 500) })));
    assert.deepEqual(await store.spend(scopes), [2500, 2500, 2000, 2000, 2500]);
    assert.deepEqual(await store.spend(requestScopes("t1", "u2", PERIODS)), [
      2500,
      2500,
      500,
      500,
      2500,
    ]);
  });

  test("spend: the user budget counts toward the fraction too", async (store) => {
    const budgets = { tenant_day: 1_000_000, user_day: 10_000 };
    await store.setSpend(scope.userDay(), 5000);
    const r = assertOk(await store.admit(input({ spend: managed(budgets, 100) })));
    assert.equal(r.fraction, 0.5);
  });

  test("spend: at >= 90% with a downgrade reserve the request is downgraded", async (store) => {
    const budgets = { tenant_day: 10_000 };
    await store.setSpend(scope.tenantDay(), 9000);
    const r = assertOk(await store.admit(input({ spend: managed(budgets, 500, 100) })));
    assert.equal(r.fraction, 0.9);
    assert.equal(r.downgraded, true);
    assert.equal(r.reserved, 100);
    assert.deepEqual(await store.spend(requestScopes("t1", "u1", PERIODS)), [
      9100,
      100,
      100,
      100,
      100,
    ]);
  });

  test("spend: just under 90% is not downgraded", async (store) => {
    await store.setSpend(scope.tenantDay(), 8999);
    const r = assertOk(
      await store.admit(input({ spend: managed({ tenant_day: 10_000 }, 500, 100) })),
    );
    assert.equal(r.downgraded, false);
    assert.equal(r.reserved, 500);
  });

  test("spend: at >= 90% without a downgrade model (reserve_downgraded 0) it is not downgraded", async (store) => {
    await store.setSpend(scope.tenantDay(), 9500);
    const r = assertOk(
      await store.admit(input({ spend: managed({ tenant_day: 10_000 }, 500, 0) })),
    );
    assert.equal(r.fraction, 0.95);
    assert.equal(r.downgraded, false);
    assert.equal(r.reserved, 500);
    assert.deepEqual(await store.spend([scope.tenantDay()]), [10_000]);
  });

  test("spend: at >= 110% the request is refused with reason budget and nothing is charged", async (store) => {
    const limits = { ...ROOMY, rpm: 2, user_rpm: 2 };
    await store.setSpend(scope.tenantDay(), 11_000);
    const r = await store.admit(
      input({ limits, spend: managed({ tenant_day: 10_000 }, 500, 100) }),
    );
    assert.deepEqual(r, { ok: false, reason: "budget", fraction: 1.1 });
    assert.deepEqual(await store.spend(requestScopes("t1", "u1", PERIODS)), [11_000, 0, 0, 0, 0]);
    // Nor did it take a request token.
    const byok = assertOk(await store.admit(input({ limits })));
    assert.equal(byok.rate.requests.remaining, 1);
  });

  test("spend: an override lets a blocked tenant through until cleared; getOverride reports it", async (store) => {
    const budgets = { tenant_day: 10_000 };
    await store.setSpend(scope.tenantDay(), 12_000);
    assert.equal(await store.getOverride("t1"), null);
    const blocked = await store.admit(input({ spend: managed(budgets, 500) }));
    assert.ok(!blocked.ok && blocked.reason === "budget", JSON.stringify(blocked));

    const override = {
      tenant_id: "t1",
      reason: "quarter-end batch — Übertrag ✓",
      by: "ops@example.com",
      expires_at: Date.now() + 60_000,
    };
    await store.setOverride(override);
    assert.deepEqual(await store.getOverride("t1"), override);
    assert.equal(await store.getOverride("t2"), null);

    const through = assertOk(await store.admit(input({ spend: managed(budgets, 500) })));
    assert.equal(through.fraction, 1.2);
    assert.equal(through.reserved, 500);
    assert.deepEqual(await store.spend([scope.tenantDay()]), [12_500]);
    // The override is the tenant's: another over-budget tenant stays blocked.
    await store.setSpend(scope.tenantDay("t2"), 12_000);
    const other = await store.admit(input({ tenant: "t2", spend: managed(budgets, 500) }));
    assert.ok(!other.ok && other.reason === "budget", JSON.stringify(other));

    await store.clearOverride("t1");
    assert.equal(await store.getOverride("t1"), null);
    const again = await store.admit(input({ spend: managed(budgets, 500) }));
    assert.deepEqual(again, { ok: false, reason: "budget", fraction: 1.25 });
  });

  test("spend: the global daily cap refuses even a tenant under budget", async (store) => {
    const budgets = { tenant_day: 10_000, tenant_month: 100_000, global_day: 5000 };
    await store.setSpend(scope.global(), 4999);
    assertOk(await store.admit(input({ tenant: "big", spend: managed(budgets, 10) })));
    assert.deepEqual(await store.spend([scope.global()]), [5009]);

    const r = await store.admit(input({ tenant: "small", user: "x", spend: managed(budgets, 10) }));
    assert.deepEqual(r, { ok: false, reason: "global_cap", fraction: 0 });
    assert.deepEqual(await store.spend(requestScopes("small", "x", PERIODS)), [0, 0, 0, 0, 5009]);
    // BYOK is not subject to the managed cap.
    assertOk(await store.admit(input({ tenant: "small", user: "x" })));
    // The next day has its own global counter.
    assertOk(
      await store.admit(
        input({ tenant: "small", user: "x", periods: NEXT_DAY, spend: managed(budgets, 10) }),
      ),
    );
  });

  test("spend: the day alert fires once per tenant and day at >= 80%", async (store) => {
    const budgets = { tenant_day: 10_000, tenant_month: 1_000_000 };
    await store.setSpend(scope.tenantDay(), 7999);
    const below = assertOk(await store.admit(input({ spend: managed(budgets, 1) })));
    assert.deepEqual(below.alerts, []);
    // Now at exactly 80% before the request.
    const first = assertOk(await store.admit(input({ spend: managed(budgets, 100) })));
    assert.equal(first.fraction, 0.8);
    assert.deepEqual(first.alerts, ["day"]);
    const later = assertOk(await store.admit(input({ spend: managed(budgets, 100) })));
    assert.deepEqual(later.alerts, []);
    assert.deepEqual(
      assertOk(await store.admit(input({ spend: managed(budgets, 100) }))).alerts,
      [],
    );

    // Another tenant raises its own alert.
    await store.setSpend(scope.tenantDay("t2"), 9000);
    const t2 = assertOk(await store.admit(input({ tenant: "t2", spend: managed(budgets, 100) })));
    assert.deepEqual(t2.alerts, ["day"]);

    // A new day is a new period.
    await store.setSpend(scope.tenantDay("t1", NEXT_DAY), 8500);
    const nextDay = assertOk(
      await store.admit(input({ periods: NEXT_DAY, spend: managed(budgets, 100) })),
    );
    assert.deepEqual(nextDay.alerts, ["day"]);
  });

  test("spend: the month alert fires once per tenant and month, independently of the day", async (store) => {
    const budgets = { tenant_day: 1_000_000, tenant_month: 10_000 };
    await store.setSpend(scope.tenantMonth(), 8000);
    const first = assertOk(await store.admit(input({ spend: managed(budgets, 100) })));
    assert.deepEqual(first.alerts, ["month"]);
    const later = assertOk(await store.admit(input({ spend: managed(budgets, 100) })));
    assert.deepEqual(later.alerts, []);
    // A new day in the same month: no new month alert.
    const nextDay = assertOk(
      await store.admit(input({ periods: NEXT_DAY, spend: managed(budgets, 100) })),
    );
    assert.deepEqual(nextDay.alerts, []);
    // A new month alerts again.
    await store.setSpend(scope.tenantMonth("t1", NEXT_MONTH), 9000);
    const nextMonth = assertOk(
      await store.admit(input({ periods: NEXT_MONTH, spend: managed(budgets, 100) })),
    );
    assert.deepEqual(nextMonth.alerts, ["month"]);
  });

  test("spend: day and month alerts can fire together", async (store) => {
    const budgets = { tenant_day: 10_000, tenant_month: 10_000 };
    await store.setSpend(scope.tenantDay(), 8000);
    await store.setSpend(scope.tenantMonth(), 8000);
    const r = assertOk(await store.admit(input({ spend: managed(budgets, 100) })));
    assert.deepEqual(r.alerts, ["day", "month"]);
    assert.deepEqual(
      assertOk(await store.admit(input({ spend: managed(budgets, 100) }))).alerts,
      [],
    );
  });

  test("spend: a budget of 0 means unlimited for that scope", async (store) => {
    await store.setSpend(scope.tenantDay(), 50_000_000);
    await store.setSpend(scope.userDay(), 50_000_000);
    await store.setSpend(scope.global(), 50_000_000);
    await store.setSpend(scope.tenantMonth(), 10_000);
    // Only the tenant month budget is set: 10 000 of 100 000.
    const r = assertOk(
      await store.admit(input({ spend: managed({ tenant_month: 100_000 }, 100, 50) })),
    );
    assert.equal(r.fraction, 0.1);
    assert.equal(r.downgraded, false);
    assert.deepEqual(r.alerts, []);
    // No budgets at all: never refused, never downgraded.
    const free = assertOk(await store.admit(input({ spend: managed({}, 100, 50) })));
    assert.equal(free.fraction, 0);
    assert.equal(free.downgraded, false);
    assert.equal(free.reserved, 100);
  });

  // --- BYOK -----------------------------------------------------------------

  test("byok: admission without spend never changes a spend counter", async (store) => {
    const scopes = requestScopes("t1", "u1", PERIODS);
    await store.setSpend(scope.tenantDay(), 9999);
    await store.setSpend(scope.global(), 123);
    for (let i = 0; i < 3; i++) {
      const r = assertOk(await store.admit(input({ tokens: 500 })));
      assert.deepEqual([r.fraction, r.downgraded, r.reserved], [0, false, 0]);
      assert.deepEqual(r.alerts, []);
    }
    assert.deepEqual(await store.spend(scopes), [9999, 0, 0, 0, 123]);
    // Settling a BYOK request (spend_delta 0) leaves them alone too.
    await store.settle({
      tenant: "t1",
      user: "u1",
      periods: PERIODS,
      limits: ROOMY,
      token_delta: -200,
      spend_delta: 0,
    });
    assert.deepEqual(await store.spend(scopes), [9999, 0, 0, 0, 123]);
  });

  // --- settle and reconciliation -------------------------------------------

  test("settle: spend_delta is added to all five counters, negative too", async (store) => {
    const scopes = requestScopes("t1", "u1", PERIODS);
    const budgets = { tenant_day: 1_000_000 };
    assertOk(await store.admit(input({ spend: managed(budgets, 5000) })));
    const settle = (spend_delta: number) =>
      store.settle({
        tenant: "t1",
        user: "u1",
        periods: PERIODS,
        limits: ROOMY,
        token_delta: 0,
        spend_delta,
      });
    await settle(-3800); // actual cost 1200
    assert.deepEqual(await store.spend(scopes), [1200, 1200, 1200, 1200, 1200]);
    await settle(300);
    assert.deepEqual(await store.spend(scopes), [1500, 1500, 1500, 1500, 1500]);
    // Other users' and tenants' counters are untouched.
    assert.deepEqual(await store.spend(requestScopes("t2", "u1", PERIODS)), [0, 0, 0, 0, 1500]);
  });

  test("reconcile: setSpend sets, correctSpend adds (negative too), unknown counters read 0", async (store) => {
    assert.deepEqual(await store.spend([]), []);
    const unknown: SpendScope = {
      scope: "user",
      tenant: "nobody",
      id: "none",
      period: "month",
      bucket: "199901",
    };
    assert.deepEqual(await store.spend([unknown, scope.global(NEXT_DAY)]), [0, 0]);

    await store.setSpend(scope.tenantMonth(), 7_000_000);
    await store.setSpend(scope.tenantMonth(), 2_500_000);
    assert.deepEqual(await store.spend([scope.tenantMonth()]), [2_500_000]);
    await store.correctSpend(scope.tenantMonth(), 125);
    await store.correctSpend(scope.tenantMonth(), -1000);
    assert.deepEqual(await store.spend([scope.tenantMonth()]), [2_499_125]);

    // correctSpend on an unknown counter starts from 0; it may go negative.
    await store.correctSpend(scope.userDay("t9", "u9"), -40);
    await store.correctSpend(scope.global(), 77);
    assert.deepEqual(
      await store.spend([scope.userDay("t9", "u9"), scope.global(), scope.tenantDay()]),
      [-40, 77, 0],
    );

    // The same counters the request path uses.
    assertOk(await store.admit(input({ spend: managed({ tenant_month: 10_000_000 }, 1) })));
    assert.deepEqual(await store.spend(requestScopes("t1", "u1", PERIODS)), [
      1,
      2_499_126,
      1,
      1,
      78,
    ]);
  });

  // --- force: charge a locally admitted request after the fact ------------

  test("admit returns the five spend counters after its reservation (zeros for BYOK)", async (store) => {
    await store.setSpend(scope.global(), 500);
    const r = assertOk(
      await store.admit(input({ spend: managed({ tenant_day: 1_000_000 }, 40) })),
    );
    assert.deepEqual(r.spent, [40, 40, 40, 40, 540]);
    assert.deepEqual(assertOk(await store.admit(input({ tenant: "t2" }))).spent, [0, 0, 0, 0, 0]);
  });

  test("force: charges past the rate limit, a blocked budget and the global cap, never downgrades", async (store) => {
    const limits = { ...ROOMY, rpm: 1, user_rpm: 1, tpm: 100, user_tpm: 100 };
    assertOk(await store.admit(input({ limits, tokens: 100 })));
    const refused = await store.admit(input({ limits, tokens: 100 }));
    assert.ok(!refused.ok && refused.reason === "requests", JSON.stringify(refused));
    const forced = assertOk(await store.admit(input({ limits, tokens: 50, force: true })));
    // The debt stays on the buckets: the next unforced admission is refused longer.
    assert.equal(forced.rate.requests.remaining, 0);
    assert.equal(forced.rate.tokens.remaining, 0);

    const budgets = { tenant_day: 1000, global_day: 2000 };
    await store.setSpend(scope.tenantDay("t2"), 1200);
    const blocked = await store.admit(input({ tenant: "t2", spend: managed(budgets, 10, 5) }));
    assert.ok(!blocked.ok && blocked.reason === "budget", JSON.stringify(blocked));
    const charged = assertOk(
      await store.admit(input({ tenant: "t2", spend: managed(budgets, 10, 5), force: true })),
    );
    assert.equal(charged.downgraded, false);
    assert.equal(charged.reserved, 10);
    assert.deepEqual(charged.spent.slice(0, 1), [1210]);

    await store.setSpend(scope.global(), 2000);
    const capped = await store.admit(input({ tenant: "t3", spend: managed(budgets, 10) }));
    assert.ok(!capped.ok && capped.reason === "global_cap", JSON.stringify(capped));
    const past = assertOk(
      await store.admit(input({ tenant: "t3", spend: managed(budgets, 10), force: true })),
    );
    assert.equal(past.spent[4], 2010);
  });

  test("force: a charge that crosses 80% raises the alert once", async (store) => {
    const budgets = { tenant_day: 1000 };
    await store.setSpend(scope.tenantDay(), 850);
    const first = assertOk(await store.admit(input({ spend: managed(budgets, 1), force: true })));
    assert.deepEqual(first.alerts, ["day"]);
    const again = assertOk(await store.admit(input({ spend: managed(budgets, 1), force: true })));
    assert.deepEqual(again.alerts, []);
  });
}

// --- memory only: a fake clock moves time ------------------------------------

Deno.test("memory: buckets refill with time (one request per 20 s at rpm 3)", async () => {
  let t = Date.UTC(2026, 10, 26, 12);
  const store = new MemoryBudgetStore({ now: () => t });
  const limits = { ...ROOMY, rpm: 3, user_rpm: 3, tpm: 100, user_tpm: 100 };
  for (let i = 0; i < 3; i++) assertOk(await store.admit(input({ limits })));
  const refused = await store.admit(input({ limits }));
  assert.ok(!refused.ok && refused.reason === "requests");
  assert.equal(refused.retry_after_ms, 20_000);

  t += 19_999;
  const early = await store.admit(input({ limits }));
  assert.ok(!early.ok && early.reason === "requests");
  assert.equal(early.retry_after_ms, 1);

  t += 1;
  const r = assertOk(await store.admit(input({ limits })));
  assert.equal(r.rate.requests.remaining, 0);
  assert.ok(!(await store.admit(input({ limits }))).ok);

  // Tokens refill too, capped at the limit (another tenant, so requests are free).
  const tok = { ...limits, rpm: 100, user_rpm: 100 };
  const big = assertOk(await store.admit(input({ tenant: "t2", limits: tok, tokens: 100 })));
  assert.equal(big.rate.tokens.remaining, 0);
  assert.equal(big.rate.tokens.reset_ms, 60_000);
  t += 30_000;
  const half = assertOk(await store.admit(input({ tenant: "t2", limits: tok })));
  assert.equal(half.rate.tokens.remaining, 50);
  t += 10 * 60_000;
  const full = assertOk(await store.admit(input({ tenant: "t2", limits: tok })));
  assert.equal(full.rate.tokens.remaining, 100);
  assert.equal(full.rate.tokens.reset_ms, 0);
});

Deno.test("memory: an override expires when the clock passes expires_at", async () => {
  let t = Date.UTC(2026, 10, 26, 12);
  const store = new MemoryBudgetStore({ now: () => t });
  const budgets = { tenant_day: 10_000 };
  await store.setSpend(scope.tenantDay(), 20_000);
  const override = { tenant_id: "t1", reason: "incident", by: "ops", expires_at: t + 60_000 };
  await store.setOverride(override);
  assert.deepEqual(await store.getOverride("t1"), override);
  assertOk(await store.admit(input({ spend: managed(budgets, 1) })));

  t += 59_999;
  assertOk(await store.admit(input({ spend: managed(budgets, 1) })));
  t += 1;
  assert.equal(await store.getOverride("t1"), null);
  const blocked = await store.admit(input({ spend: managed(budgets, 1) }));
  assert.ok(!blocked.ok && blocked.reason === "budget", JSON.stringify(blocked));
});

Deno.test("periodsAt: UTC day and month buckets, across a day and a month boundary", () => {
  assert.deepEqual(periodsAt(Date.UTC(2026, 10, 30, 23, 59, 59, 999)), {
    day: "20261130",
    month: "202611",
  });
  assert.deepEqual(periodsAt(Date.UTC(2026, 11, 1)), { day: "20261201", month: "202612" });
  assert.deepEqual(periodsAt(Date.UTC(2026, 11, 1, 12)), { day: "20261201", month: "202612" });
  assert.deepEqual(periodsAt(Date.UTC(2026, 10, 30, 1)), { day: "20261130", month: "202611" });
});
