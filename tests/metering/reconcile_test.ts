import assert from "node:assert/strict";
import { MemoryBudgetStore } from "../../src/budget/memory_store.ts";
import { periodsAt, type SpendScope } from "../../src/budget/store.ts";
import { systemClock } from "../../src/clock.ts";
import { createReconciler } from "../../src/metering/reconcile.ts";
import { createLogger } from "../../src/obs/log.ts";
import { startGateway, testConfig, type TestGateway, withFullGateway } from "../support/gateway.ts";

const SECRET = "reconcile-test-metering-secret";

function withGateway(fn: (gw: TestGateway) => Promise<void>) {
  return withFullGateway({
    metering: { secret: SECRET, shutdown_flush_ms: 2_000 },
    // Whole micro-dollars per token, so the store and the ledger agree to the unit.
    models: {
      "convergio-demo": {
        deployments: [{ provider: "demo", model: "demo-large" }],
        price: { input_per_1m: 1000, output_per_1m: 3000 },
      },
    },
    tenant_defaults: { rpm: 100, tpm: 1_000_000, daily_budget_usd: 50, monthly_budget_usd: 500 },
  }, fn);
}

async function chat(gw: TestGateway, tenant: string, mode: "managed" | "byok", prompt: string) {
  const res = await fetch(`${gw.url}/v1/chat`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${await gw.token({ tenant, user: `${tenant}-user`, mode })}`,
      "content-type": "application/json",
    },
    body: JSON.stringify({ prompt }),
  });
  assert.equal(res.status, 200, await res.text());
}

/** Managed spend in micro-dollars, straight from the ledger's events. */
async function ledgerMicro(gw: TestGateway, tenant?: string, since?: string): Promise<number> {
  const sql = gw.runtime.db!.sql;
  const [row] = await sql`
    SELECT coalesce(sum(cost_usd), 0)::text AS usd FROM usage_events
    WHERE mode = 'managed'
      ${tenant ? sql`AND tenant_id = ${tenant}` : sql``}
      AND occurred_at >= ${since ?? new Date().toISOString().slice(0, 10)}::date`;
  return Math.round(Number(row.usd) * 1e6);
}

function scopes(tenant: string) {
  const p = periodsAt(Date.now());
  return {
    day: { scope: "tenant", id: tenant, period: "day", bucket: p.day } as SpendScope,
    month: { scope: "tenant", id: tenant, period: "month", bucket: p.month } as SpendScope,
    global: { scope: "global", period: "day", bucket: p.day } as SpendScope,
  };
}

/** Ingests managed traffic of two tenants (and some BYOK that must not count). */
async function traffic(gw: TestGateway) {
  await chat(gw, "acme", "managed", "first managed request of acme");
  await chat(gw, "acme", "managed", "second one, a little longer than the first");
  await chat(gw, "acme", "byok", "byok is not charged to managed budgets");
  await chat(gw, "globex", "managed", "globex spends too");
  await gw.runtime.batcher!.drain();
  await gw.deps.edge!.guard.idle();
}

Deno.test("reconcile: a counter below the ledger is raised to the ledger's managed spend", async () => {
  await withGateway(async (gw) => {
    await traffic(gw);
    const store = gw.deps.edge!.store;
    const acme = scopes("acme");
    const ledger = await ledgerMicro(gw, "acme");
    assert.ok(ledger > 0);
    // The fast path already agrees with the ledger.
    assert.deepEqual(await store.spend([acme.day, acme.month]), [ledger, ledger]);
    // BYOK stays out of it.
    const [{ usd: byok }] = await gw.runtime.db!.sql`
      SELECT sum(cost_usd)::text AS usd FROM usage_events WHERE mode = 'byok'`;
    assert.ok(Number(byok) > 0);

    await store.setSpend(acme.day, 0);
    const raised = await gw.runtime.reconcile!();
    assert.equal(raised, 1, "only the lowered counter moves");
    assert.deepEqual(await store.spend([acme.day]), [ledger]);

    // Idempotent: a second pass finds nothing to do.
    assert.equal(await gw.runtime.reconcile!(), 0);
    assert.deepEqual(await store.spend([acme.day, acme.month]), [ledger, ledger]);

    // Partly lost spend is topped up, not added on top.
    await store.setSpend(acme.day, Math.floor(ledger / 2));
    assert.equal(await gw.runtime.reconcile!(), 1);
    assert.deepEqual(await store.spend([acme.day]), [ledger]);
  });
});

Deno.test("reconcile: a counter above the ledger is left alone", async () => {
  await withGateway(async (gw) => {
    await traffic(gw);
    const store = gw.deps.edge!.store;
    const acme = scopes("acme");
    const ledger = await ledgerMicro(gw, "acme");
    const above = ledger + 5_000_000;
    await store.setSpend(acme.day, above);
    await store.setSpend(acme.month, above + 1);
    assert.equal(await gw.runtime.reconcile!(), 0);
    assert.deepEqual(await store.spend([acme.day, acme.month]), [above, above + 1]);
  });
});

Deno.test("reconcile: the global day and tenant month counters are raised too", async () => {
  await withGateway(async (gw) => {
    await traffic(gw);
    const store = gw.deps.edge!.store;
    const acme = scopes("acme");
    const globex = scopes("globex");
    const global = await ledgerMicro(gw);
    const monthStart = `${new Date().toISOString().slice(0, 7)}-01`;
    const acmeMonth = await ledgerMicro(gw, "acme", monthStart);
    const globexDay = await ledgerMicro(gw, "globex");
    assert.equal(global, (await ledgerMicro(gw, "acme")) + globexDay);

    // As after a Redis restart: every counter gone.
    for (const scope of [acme.global, acme.day, acme.month, globex.day, globex.month]) {
      await store.setSpend(scope, 0);
    }
    assert.equal(await gw.runtime.reconcile!(), 5);
    assert.deepEqual(
      await store.spend([acme.global, acme.day, acme.month, globex.day, globex.month]),
      [global, await ledgerMicro(gw, "acme"), acmeMonth, globexDay, globexDay],
    );
  });
});

Deno.test("reconcile: an unreachable or refusing aggregator makes a pass reject", async () => {
  const log = createLogger(() => {});
  const store = new MemoryBudgetStore(systemClock);
  const unreachable = createReconciler({
    aggregatorUrl: "http://127.0.0.1:9",
    secret: SECRET,
    store,
    clock: systemClock,
    log,
  });
  await assert.rejects(unreachable.reconcile());

  await withGateway(async (gw) => {
    const wrongSecret = createReconciler({
      aggregatorUrl: gw.url,
      secret: "not-the-metering-secret",
      store,
      clock: systemClock,
      log,
    });
    await assert.rejects(wrongSecret.reconcile(), /rollups answered 401/);
    const right = createReconciler({
      aggregatorUrl: `${gw.url}/`,
      secret: SECRET,
      store,
      clock: systemClock,
      log,
    });
    assert.equal(await right.reconcile(), 0);
  });
});

Deno.test("reconcile: createRuntime's background pass only logs when the aggregator is unreachable", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "cvg-reconcile-edge-" });
  let gw: TestGateway | undefined;
  try {
    gw = await startGateway(
      testConfig({
        data_dir: dataDir,
        metering: { aggregator_url: "http://127.0.0.1:9", secret: SECRET, shutdown_flush_ms: 500 },
      }),
      { meter: undefined },
    );
    assert.ok(gw.runtime.reconcile, "the edge runs the real reconciler");
    await assert.rejects(gw.runtime.reconcile());
    const health = await fetch(`${gw.url}/healthz`);
    assert.equal(health.status, 200);
    await health.body?.cancel();
  } finally {
    // Closing waits for the pass started at boot.
    await gw?.close();
    await Deno.remove(dataDir, { recursive: true });
  }
  const skipped = gw!.logs.filter((l) => l.msg === "budget reconciliation skipped");
  assert.ok(skipped.length >= 1, JSON.stringify(gw!.logs));
  assert.equal(skipped[0].level, "warn");
  assert.equal(typeof skipped[0].error, "string");
});
