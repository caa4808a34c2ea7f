import assert from "node:assert/strict";
import { createAlertWebhook } from "../../src/budget/alert_webhook.ts";
import { createGuard, formatReset, rateHeaders } from "../../src/budget/guard.ts";
import { LocalAdmission } from "../../src/budget/local_admission.ts";
import { MemoryBudgetStore } from "../../src/budget/memory_store.ts";
import { type BudgetStore, StoreUnavailable } from "../../src/budget/store.ts";
import type { Principal } from "../../src/auth/principal.ts";
import { GatewayError } from "../../src/errors.ts";
import { createLogger } from "../../src/obs/log.ts";
import { createMetrics } from "../../src/obs/metrics.ts";
import type { ChatRequest } from "../../src/providers/chat_schema.ts";
import { testConfig } from "../support/gateway.ts";

const price = (i: number, o: number) => ({ input_per_1m: i, output_per_1m: o });
const DAY = { scope: "tenant" as const, id: "t", period: "day" as const, bucket: "20261126" };

function setup(raw: Record<string, unknown> = {}, store?: BudgetStore) {
  const now = Date.UTC(2026, 10, 26, 12);
  const clock = { now: () => now };
  const config = testConfig({
    models: {
      big: {
        deployments: [{ provider: "demo", model: "x" }],
        price: price(1_000_000, 1_000_000),
        max_output_tokens: 10,
      },
      small: {
        deployments: [{ provider: "demo", model: "y" }],
        price: price(100_000, 100_000),
        max_output_tokens: 10,
      },
    },
    tenant_defaults: { rpm: 1000, tpm: 100_000, daily_budget_usd: 1, monthly_budget_usd: 100 },
    guardrails: { global_daily_cap_usd: 0, downgrade_model: "small" },
    ...raw,
  });
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger((l) => lines.push(JSON.parse(l)), clock.now);
  const metrics = createMetrics();
  const s = store ?? new MemoryBudgetStore(clock);
  const guard = createGuard({
    config,
    store: s,
    clock,
    log,
    metrics,
    alerts: createAlertWebhook({ log, metrics }),
  });
  return { guard, store: s, lines, metrics };
}

const managed: Principal = { user_id: "u", tenant_id: "t", roles: ["user"], mode: "managed" };
const byok: Principal = { ...managed, mode: "byok" };
// "hi" is 1 token + 4 per message: 5 prompt tokens, and the model's cap of 10
// output tokens, at $1 a token on "big".
const request = (): ChatRequest => ({ model: "big", messages: [{ role: "user", content: "hi" }] });

Deno.test("reset durations use OpenAI's format", () => {
  assert.equal(formatReset(20), "20ms");
  assert.equal(formatReset(1500), "1.5s");
  assert.equal(formatReset(360_000), "6m0s");
  assert.equal(formatReset(61_250), "1m1.25s");
  assert.deepEqual(
    rateHeaders({
      requests: { limit: 60, remaining: 59, reset_ms: 1000 },
      tokens: { limit: 1000, remaining: 10, reset_ms: 59_400 },
    }),
    {
      "x-ratelimit-limit-requests": "60",
      "x-ratelimit-remaining-requests": "59",
      "x-ratelimit-reset-requests": "1s",
      "x-ratelimit-limit-tokens": "1000",
      "x-ratelimit-remaining-tokens": "10",
      "x-ratelimit-reset-tokens": "59.4s",
    },
  );
});

Deno.test("reservation is the worst case and settles to the actual cost", async () => {
  const { guard, store } = setup({
    tenant_defaults: { daily_budget_usd: 1000, monthly_budget_usd: 1000 },
  });
  const a = await guard.admit(managed, request(), "big");
  assert.equal((await store.spend([DAY]))[0], 15 * 1_000_000, "prompt estimate plus output cap");
  a.settle({ input_tokens: 3, output_tokens: 2 });
  await guard.idle();
  assert.equal((await store.spend([DAY]))[0], 5 * 1_000_000);
  const b = await guard.admit(managed, request(), "big");
  b.settle(null);
  await guard.idle();
  assert.equal((await store.spend([DAY]))[0], 5 * 1_000_000, "a failed call releases it");
});

Deno.test("under local admission a request is charged its actual cost after, and a charge past 80% alerts", async () => {
  const now = Date.UTC(2026, 10, 26, 12);
  const inner = new MemoryBudgetStore({ now: () => now });
  const local = new LocalAdmission(inner, {
    clock: { now: () => now },
    freshMs: 1000,
    maxInFlight: 8,
  });
  const { guard, lines } = setup(
    { tenant_defaults: { daily_budget_usd: 100, monthly_budget_usd: 10_000 } },
    local,
  );
  const first = await guard.admit(managed, request(), "big");
  first.settle({ input_tokens: 3, output_tokens: 2 });
  await guard.idle();
  assert.equal((await inner.spend([DAY]))[0], 5_000_000);

  const second = await guard.admit(managed, request(), "big");
  assert.equal((await inner.spend([DAY]))[0], 5_000_000, "admitted locally: nothing reserved");
  // Other edges spend meanwhile: the tenant is past 80% when this request is charged.
  await inner.correctSpend(DAY, 76_000_000);
  second.settle({ input_tokens: 1, output_tokens: 1 });
  await guard.idle();
  assert.equal((await inner.spend([DAY]))[0], 83_000_000);
  assert.deepEqual(
    lines.filter((l) => l.msg === "budget alert").map((l) => l.period),
    ["day"],
  );
});

Deno.test("80% alerts once, 90% downgrades, 110% blocks until an override", async () => {
  const { guard, store, lines, metrics } = setup({
    tenant_defaults: { daily_budget_usd: 100, monthly_budget_usd: 10_000 },
  });
  await store.setSpend(DAY, 80_000_000);
  for (let i = 0; i < 2; i++) {
    const a = await guard.admit(managed, request(), "big");
    assert.equal(a.alias, "big");
    a.settle({ input_tokens: 0, output_tokens: 0 });
    await guard.idle();
  }
  assert.equal(lines.filter((l) => l.msg === "budget alert").length, 1, "one alert per period");

  await store.setSpend(DAY, 95_000_000);
  const down = await guard.admit(managed, request(), "big");
  assert.equal(down.alias, "small");
  assert.equal(down.downgradedFrom, "big");
  down.settle(null);
  await guard.idle();

  await store.setSpend(DAY, 110_000_000);
  await assert.rejects(
    guard.admit(managed, request(), "big"),
    (e) => e instanceof GatewayError && e.code === "budget.blocked" && e.status === 402,
  );
  await store.setOverride({
    tenant_id: "t",
    reason: "exam week",
    by: "ops",
    expires_at: Date.UTC(2026, 10, 27),
  });
  const lifted = await guard.admit(managed, request(), "big");
  assert.equal(lifted.alias, "small", "an override lifts the block, not the downgrade");
  lifted.settle(null);
  await guard.idle();
  const text = await metrics.registry.metrics();
  assert.match(text, /convergio_guardrail_actions_total\{action="alert",lane="managed"\} 1/);
  assert.match(text, /convergio_guardrail_actions_total\{action="downgrade",lane="managed"\} 2/);
  assert.match(text, /convergio_guardrail_actions_total\{action="block",lane="managed"\} 1/);
});

Deno.test("BYOK is never charged to managed budgets but is rate limited", async () => {
  const { guard, store } = setup({ tenant_defaults: { rpm: 2, daily_budget_usd: 0.000001 } });
  for (let i = 0; i < 2; i++) {
    (await guard.admit(byok, request(), "big")).settle({ input_tokens: 9, output_tokens: 9 });
  }
  await guard.idle();
  assert.equal((await store.spend([DAY]))[0], 0);
  await assert.rejects(guard.admit(byok, request(), "big"), (e) => {
    assert.ok(e instanceof GatewayError);
    assert.equal(e.code, "quota.exceeded");
    assert.equal(e.status, 429);
    assert.equal(e.headers["retry-after"], "30");
    assert.equal(e.headers["x-ratelimit-remaining-requests"], "0");
    return true;
  });
});

Deno.test("the global managed cap blocks managed requests only", async () => {
  const { guard, store } = setup({ guardrails: { global_daily_cap_usd: 10 } });
  await store.setSpend({ scope: "global", period: "day", bucket: "20261126" }, 10_000_000);
  await assert.rejects(
    guard.admit(managed, request(), "big"),
    (e) =>
      e instanceof GatewayError && e.code === "budget.blocked" &&
      /global daily spend cap/.test(e.message),
  );
  (await guard.admit(byok, request(), "big")).settle(null);
});

Deno.test("limits come from the plan, overridden per tenant", async () => {
  const { guard } = setup({
    plans: { school: { rpm: 5, user_rpm: 1 } },
    tenants: { t: { plan: "school", limits: { rpm: 7 } } },
  });
  const a = await guard.admit(byok, request(), "big");
  assert.equal(a.headers["x-ratelimit-limit-requests"], "1", "the tighter user bucket is shown");
  await assert.rejects(
    guard.admit(byok, request(), "big"),
    (e) => e instanceof GatewayError && e.code === "quota.exceeded",
  );
  const other = await guard.admit({ ...byok, user_id: "v" }, request(), "big");
  assert.equal(other.headers["x-ratelimit-remaining-requests"], "0");
  const tenantLeft = await guard.admit({ ...byok, user_id: "w" }, request(), "big");
  assert.equal(tenantLeft.headers["x-ratelimit-limit-requests"], "1");
});

Deno.test("store outage: managed fails closed, BYOK fails open, both counted and logged", async () => {
  class Down extends MemoryBudgetStore {
    override admit() {
      return Promise.reject(new StoreUnavailable("connection refused"));
    }
  }
  const { guard, lines, metrics } = setup({}, new Down({ now: Date.now }));
  await assert.rejects(
    guard.admit(managed, request(), "big"),
    (e) => e instanceof GatewayError && e.code === "internal" && e.retryable && e.status === 503,
  );
  const open = await guard.admit(byok, request(), "big");
  assert.deepEqual(open.headers, {});
  open.settle({ input_tokens: 1, output_tokens: 1 });
  assert.equal(lines.filter((l) => l.msg === "budget store unavailable").length, 2);
  const text = await metrics.registry.metrics();
  assert.match(
    text,
    /convergio_budget_store_errors_total\{op="admit",lane="managed",policy="closed"\} 1/,
  );
  assert.match(
    text,
    /convergio_budget_store_errors_total\{op="admit",lane="byok",policy="open"\} 1/,
  );
});

Deno.test("a failed settlement is logged for reconciliation, never thrown", async () => {
  class Flaky extends MemoryBudgetStore {
    override settle() {
      return Promise.reject(new StoreUnavailable("gone"));
    }
  }
  const { guard, lines } = setup({}, new Flaky({ now: Date.now }));
  (await guard.admit(managed, request(), "big")).settle({ input_tokens: 1, output_tokens: 1 });
  await guard.idle();
  assert.ok(
    lines.some((l) => l.msg === "budget settle failed; the reservation stays on the counters"),
  );
});

Deno.test("alert webhook retries until delivered, and counts a delivery that never lands", async () => {
  let calls = 0;
  const bodies: Array<{ tenant_id: string }> = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    bodies.push(await req.json());
    return new Response(null, { status: ++calls < 3 ? 503 : 204 });
  });
  const alert = {
    type: "budget.alert" as const,
    tenant_id: "t",
    period: "day" as const,
    bucket: "20261126",
    fraction: 0.81,
    threshold: 0.8,
    at: "2026-11-26T12:00:00.000Z",
  };
  try {
    const metrics = createMetrics();
    const log = createLogger(() => {});
    const hook = createAlertWebhook({
      url: `http://127.0.0.1:${server.addr.port}/hook`,
      log,
      metrics,
      backoffMs: 1,
    });
    hook.send(alert);
    await hook.idle();
    assert.equal(calls, 3);
    assert.equal(bodies[2].tenant_id, "t");
    const text = await metrics.registry.metrics();
    assert.match(text, /convergio_budget_alert_webhook_total\{outcome="retried"\} 2/);
    assert.match(text, /convergio_budget_alert_webhook_total\{outcome="delivered"\} 1/);

    const dead = createAlertWebhook({
      url: "http://127.0.0.1:9/none",
      log,
      metrics,
      attempts: 2,
      backoffMs: 1,
    });
    dead.send(alert);
    await dead.idle();
    assert.match(await metrics.registry.metrics(), /outcome="failed"\} 1/);
  } finally {
    await server.shutdown();
  }
});
