/**
 * The ledger stats operators read (`/admin/stats/*`), provider health
 * (`/admin/providers`) and per-user usage (`/v1/usage/users`), against a
 * full gateway on real Postgres after real requests.
 */
import assert from "node:assert/strict";
import {
  admin,
  as,
  assertError,
  type Client,
  type Json,
  ok,
  REASON,
} from "../support/admin_client.ts";
import { type TestGateway, withFullGateway } from "../support/gateway.ts";

const CONFIG = {
  providers: {
    demo: { protocol: "mock", first_token_ms: 5, inter_token_ms: 1 },
    flaky: { protocol: "mock", fail: "unavailable", fail_every: 2 },
    down: { protocol: "mock", fail: "unavailable" },
  },
  models: {
    "convergio-demo": {
      deployments: [{ provider: "demo", model: "demo-large" }],
      price: { input_per_1m: 1000, output_per_1m: 2000 },
      max_output_tokens: 64,
    },
    "convergio-failover": {
      deployments: [{ provider: "flaky", model: "flaky-1" }, { provider: "demo", model: "demo-2" }],
      price: { input_per_1m: 500, output_per_1m: 500 },
      max_output_tokens: 64,
    },
    "convergio-down": {
      deployments: [{ provider: "down", model: "down-1" }],
      price: { input_per_1m: 1, output_per_1m: 1 },
    },
  },
  routing: { backoff_ms: 0, max_attempts: 2, breaker: { failure_threshold: 2 } },
  tenant_defaults: { rpm: 10_000, tpm: 10_000_000, daily_budget_usd: 50, monthly_budget_usd: 500 },
};

const withGateway = (fn: (gw: TestGateway, root: Client) => Promise<void>) =>
  withFullGateway(CONFIG, async (gw) => fn(gw, await admin(gw)));

/** A V7 chat as `c`; streamed when asked, on an alias when given. */
function chat(c: Client, opts: { model?: string; stream?: boolean; prompt?: string } = {}) {
  const body = { prompt: opts.prompt ?? "hello there", model_hint: opts.model };
  return opts.stream ? c.post("/v1/chat/stream", body) : c.post("/v1/chat", body);
}

interface LedgerRow {
  tenant_id: string;
  user_id: string;
  model: string | null;
  mode: string;
  occurred_at: Date;
  latency_ms: number;
  ttft_ms: number | null;
  input_tokens: number;
  output_tokens: number;
  cost_usd: number;
}

/** Every usage event, once the edge has delivered them all. */
async function ledgerRows(gw: TestGateway): Promise<LedgerRow[]> {
  await gw.runtime.batcher!.drain();
  return [
    ...await gw.deps.aggregator!.sql<LedgerRow[]>`
      SELECT tenant_id, user_id, model, mode, occurred_at, latency_ms, ttft_ms, input_tokens,
        output_tokens, cost_usd::float8 AS cost_usd
      FROM usage_events`,
  ];
}

/** Postgres's percentile_cont: linear interpolation between the closest ranks. */
function percentile(values: number[], p: number): number | null {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const at = p * (sorted.length - 1);
  const lo = Math.floor(at);
  return sorted[lo] + (sorted[Math.ceil(at)] - sorted[lo]) * (at - lo);
}

const close = (actual: number | null, expected: number | null, what: string) => {
  if (expected === null) return assert.equal(actual, null, what);
  assert.ok(
    actual !== null && Math.abs(actual - expected) < 1e-6,
    `${what}: ${actual} vs ${expected}`,
  );
};

const sum = (rows: LedgerRow[], pick: (r: LedgerRow) => number) =>
  rows.reduce((n, r) => n + pick(r), 0);

Deno.test("stats: latency percentiles per bucket are the ledger's, first token for streams", async () => {
  await withGateway(async (gw, root) => {
    const ann = await as(gw, { tenant: "acme", user: "ann" });
    for (let i = 0; i < 5; i++) ok(await chat(ann, { prompt: "word ".repeat(1 + i * 4) }));
    for (let i = 0; i < 3; i++) {
      const res = await chat(ann, { stream: true });
      assert.equal(res.status, 200, res.text);
    }
    const rows = await ledgerRows(gw);
    assert.equal(rows.length, 8);
    assert.equal(rows.filter((r) => r.ttft_ms !== null).length, 3, "streams record a first token");

    const body = ok(await root.get("/admin/stats/latency?hours=1"));
    assert.equal(body.bucket, "minute");
    const minute = (d: Date) => Math.floor(d.getTime() / 60_000) * 60_000;
    const buckets = [...new Set(rows.map((r) => minute(r.occurred_at)))].sort();
    assert.deepEqual(body.series.map((s: Json) => Date.parse(s.t)), buckets);
    for (const s of body.series) {
      const inBucket = rows.filter((r) => minute(r.occurred_at) === Date.parse(s.t));
      const whole = inBucket.filter((r) => r.ttft_ms === null).map((r) => r.latency_ms);
      const first = inBucket.flatMap((r) => (r.ttft_ms === null ? [] : [r.ttft_ms]));
      assert.equal(s.requests, inBucket.length);
      close(s.p50_ms, percentile(whole, 0.5), "p50");
      close(s.p95_ms, percentile(whole, 0.95), "p95");
      close(s.p99_ms, percentile(whole, 0.99), "p99");
      close(s.ttft_p50_ms, percentile(first, 0.5), "ttft p50");
      close(s.ttft_p95_ms, percentile(first, 0.95), "ttft p95");
    }
    assert.equal(ok(await root.get("/admin/stats/latency")).bucket, "hour", "24 h by hour");
    assert.equal(
      ok(await root.get("/admin/stats/latency?hours=24&bucket=minute")).bucket,
      "minute",
    );
    assertError(await root.get("/admin/stats/latency?hours=0"), 400, "request.invalid", "hours");
    assertError(
      await root.get("/admin/stats/latency?bucket=week"),
      400,
      "request.invalid",
      "bucket",
    );
    const tenantAdmin = await as(gw, { tenant: "acme", roles: ["tenant_admin"] });
    assertError(await tenantAdmin.get("/admin/stats/latency"), 403, "auth.forbidden");
  });
});

Deno.test("stats: errors by code count an injected failing provider's requests", async () => {
  await withGateway(async (gw, root) => {
    const ann = await as(gw, { tenant: "acme", user: "ann" });
    ok(await chat(ann));
    for (let i = 0; i < 3; i++) {
      assertError(await chat(ann, { model: "convergio-down" }), 503, "provider.unavailable");
    }
    assertError(await chat(ann, { model: "no-such-alias" }), 400, "request.invalid");
    await ledgerRows(gw);
    const body = ok(await root.get("/admin/stats/errors?hours=1"));
    assert.equal(body.hours, 1);
    const byCode = Object.fromEntries(
      body.errors.map((e: Json) => [e.error_code, e.count]),
    );
    assert.deepEqual(byCode, { "provider.unavailable": 3, "request.invalid": 1 });
    assert.deepEqual(body.errors.map((e: Json) => e.count), [3, 1], "most frequent first");
    assertError(
      await (await as(gw, { roles: ["user"] })).get("/admin/stats/errors"),
      403,
      "auth.forbidden",
    );
  });
});

Deno.test("stats: spend per tenant and model per day, managed apart, with the global cap", async () => {
  await withGateway(async (gw, root) => {
    const traffic: Array<[Client, string | undefined]> = [
      [await as(gw, { tenant: "acme", user: "ann", mode: "managed" }), undefined],
      [await as(gw, { tenant: "acme", user: "bob", mode: "byok" }), "convergio-failover"],
      [await as(gw, { tenant: "globex", user: "gus", mode: "managed" }), "convergio-failover"],
      [await as(gw, { tenant: "globex", user: "gus", mode: "managed" }), undefined],
    ];
    for (const [c, model] of traffic) ok(await chat(c, { model }));
    const rows = await ledgerRows(gw);
    const body = ok(await root.get("/admin/stats/spend?days=1"));
    const today = new Date().toISOString().slice(0, 10);
    assert.equal(body.from, today);
    assert.equal(body.global_daily_cap_usd, gw.deps.config.guardrails.global_daily_cap_usd);
    const expect = (key: (r: LedgerRow) => string) =>
      [...new Set(rows.map(key))].sort().map((k) => {
        const mine = rows.filter((r) => key(r) === k);
        return {
          day: today,
          key: k,
          cost: sum(mine, (r) => r.cost_usd),
          managed: sum(mine.filter((r) => r.mode === "managed"), (r) => r.cost_usd),
        };
      });
    const shape = (list: Json[]) =>
      list.map((r) => ({ day: r.day, key: r.key, cost: r.cost_usd, managed: r.managed_cost_usd }));
    const round = (list: Array<{ cost: number; managed: number }>) =>
      list.map((r) => ({ ...r, cost: r.cost.toFixed(6), managed: r.managed.toFixed(6) }));
    assert.deepEqual(round(shape(body.tenants)), round(expect((r) => r.tenant_id)));
    assert.deepEqual(round(shape(body.models)), round(expect((r) => r.model!)));
    assert.ok(body.tenants.every((r: Json) => r.cost_usd > 0));
    const acme = body.tenants.find((r: Json) => r.key === "acme");
    assert.ok(acme.managed_cost_usd < acme.cost_usd, "bob's BYOK spend is not managed");
    assertError(await root.get("/admin/stats/spend?days=0"), 400, "request.invalid", "days");
  });
});

Deno.test("stats: budgets put tenants past 80/90/110 % in alert, downgrade and block", async () => {
  await withGateway(async (gw, root) => {
    const tenants = ["t-ok", "t-alert", "t-downgrade", "t-block", "t-monthly"];
    for (const t of tenants) {
      ok(await chat(await as(gw, { tenant: t, user: "u", mode: "managed" })));
    }
    ok(await chat(await as(gw, { tenant: "t-byok", user: "u", mode: "byok" })));
    const rows = await ledgerRows(gw);
    const spent = (t: string) => sum(rows.filter((r) => r.tenant_id === t), (r) => r.cost_usd);
    // Budgets set after the spend, through the admin API, so the fraction each lands on is exact.
    const fractions: Record<string, [number, number]> = {
      "t-ok": [0.5, 0.01],
      "t-alert": [0.85, 0.01],
      "t-downgrade": [0.95, 0.01],
      "t-block": [1.25, 0.01],
      "t-monthly": [0.1, 0.92],
    };
    for (const [t, [day, month]] of Object.entries(fractions)) {
      ok(
        await root.put(`/admin/tenants/${t}`, {
          limits: { daily_budget_usd: spent(t) / day, monthly_budget_usd: spent(t) / month },
          reason: REASON,
        }),
      );
    }
    const body = ok(await root.get("/admin/stats/budgets"));
    assert.equal(body.day, new Date().toISOString().slice(0, 10));
    assert.deepEqual(body.thresholds, { alert: 0.8, downgrade: 0.9, block: 1.1 });
    const state = Object.fromEntries(body.tenants.map((t: Json) => [t.tenant_id, t.state]));
    assert.deepEqual(state, {
      "t-ok": "none",
      "t-alert": "alert",
      "t-downgrade": "downgrade",
      "t-block": "block",
      "t-monthly": "downgrade",
      "t-byok": "none",
    });
    assert.deepEqual(
      body.tenants.map((t: Json) => t.tenant_id),
      ["t-block", "t-downgrade", "t-monthly", "t-alert", "t-ok", "t-byok"],
      "most used first",
    );
    const block = body.tenants.find((t: Json) => t.tenant_id === "t-block");
    close(block.day_fraction, 1.25, "day fraction");
    close(block.day_usd, spent("t-block"), "day spend");
    close(block.daily_budget_usd, spent("t-block") / 1.25, "the admin API's budget");
    const byok = body.tenants.find((t: Json) => t.tenant_id === "t-byok");
    assert.equal(byok.day_usd, 0, "BYOK spend is not the managed budget's");
    assertError(
      await (await as(gw, { tenant: "t-ok", roles: ["tenant_admin"] })).get("/admin/stats/budgets"),
      403,
      "auth.forbidden",
    );
  });
});

Deno.test("providers: attempts, errors, failovers and the breaker per deployment", async () => {
  await withGateway(async (gw, root) => {
    const ann = await as(gw, { tenant: "acme", user: "ann" });
    for (let i = 0; i < 4; i++) ok(await chat(ann, { model: "convergio-failover" }));
    for (let i = 0; i < 3; i++) {
      assertError(await chat(ann, { model: "convergio-down" }), 503, "provider.unavailable");
    }
    const body = ok(await root.get("/admin/providers"));
    const by = Object.fromEntries(
      body.deployments.map((d: Json) => [`${d.provider}/${d.deployment}`, d]),
    );
    assert.deepEqual(Object.keys(by).sort(), [
      "demo/demo-2",
      "demo/demo-large",
      "down/down-1",
      "flaky/flaky-1",
    ]);
    const pick = (d: Json) => ({
      attempts: d.attempts,
      errors: d.errors,
      failovers: d.failovers,
      error_ratio: d.error_ratio,
      breaker: d.breaker,
    });
    // Every second call to flaky fails and goes on to demo-2.
    assert.deepEqual(pick(by["flaky/flaky-1"]), {
      attempts: 4,
      errors: 2,
      failovers: 2,
      error_ratio: 0.5,
      breaker: "closed",
    });
    assert.deepEqual(pick(by["demo/demo-2"]), {
      attempts: 2,
      errors: 0,
      failovers: 0,
      error_ratio: 0,
      breaker: "closed",
    });
    assert.equal(by["demo/demo-large"].attempts, 0);
    assert.equal(by["demo/demo-large"].error_ratio, 0, "no attempts is no error");
    // Two failures open the breaker; the third request never reaches the provider.
    assert.equal(by["down/down-1"].attempts, 2);
    assert.equal(by["down/down-1"].errors, 2);
    assert.equal(by["down/down-1"].breaker, "open");
    assert.equal(by["flaky/flaky-1"].alias, "convergio-failover");
    assertError(
      await (await as(gw, { roles: ["tenant_admin"] })).get("/admin/providers"),
      403,
      "auth.forbidden",
    );
  });
});

Deno.test("usage: per-user rows of one tenant, scoped to the caller's tenant", async () => {
  await withGateway(async (gw, root) => {
    const ann = await as(gw, { tenant: "acme", user: "ann", mode: "managed" });
    const bob = await as(gw, { tenant: "acme", user: "bob", mode: "byok" });
    const gus = await as(gw, { tenant: "globex", user: "gus", mode: "managed" });
    ok(await chat(ann, { prompt: "a longer prompt from ann, so she spends the most here" }));
    ok(await chat(ann));
    ok(await chat(bob, { stream: true }));
    ok(await chat(gus));
    const rows = await ledgerRows(gw);
    const expected = (tenant: string) =>
      [...new Set(rows.filter((r) => r.tenant_id === tenant).map((r) => r.user_id))].map((u) => {
        const mine = rows.filter((r) => r.tenant_id === tenant && r.user_id === u);
        return {
          user_id: u,
          requests: mine.length,
          input_tokens: sum(mine, (r) => r.input_tokens),
          output_tokens: sum(mine, (r) => r.output_tokens),
          tool_calls: 0,
          audio_seconds: 0,
          cost_usd: Number(sum(mine, (r) => r.cost_usd).toFixed(6)),
        };
      }).sort((a, b) => b.cost_usd - a.cost_usd);
    const users = (body: Json) =>
      body.users.map((u: Json) => ({ ...u, cost_usd: Number(u.cost_usd.toFixed(6)) }));

    const acmeAdmin = await as(gw, { tenant: "acme", user: "ann", roles: ["tenant_admin"] });
    const today = new Date().toISOString().slice(0, 10);
    const day = ok(await acmeAdmin.get("/v1/usage/users"));
    assert.deepEqual(
      { tenant: day.tenant_id, period: day.period, from: day.from, to: day.to },
      { tenant: "acme", period: "day", from: today, to: today },
    );
    assert.deepEqual(users(day), expected("acme"));
    assert.deepEqual(
      day.users.map((u: Json) => u.user_id),
      ["ann", "bob"],
      "biggest spender first",
    );
    const month = ok(await acmeAdmin.get("/v1/usage/users?period=month&tenant_id=acme"));
    assert.equal(month.from, `${today.slice(0, 7)}-01`);
    assert.deepEqual(users(month), expected("acme"));

    assertError(await acmeAdmin.get("/v1/usage/users?tenant_id=globex"), 403, "auth.forbidden");
    assertError(await ann.get("/v1/usage/users"), 403, "auth.forbidden");
    assertError(
      await acmeAdmin.get("/v1/usage/users?period=year"),
      400,
      "request.invalid",
      "period",
    );
    assert.deepEqual(
      users(ok(await root.get("/v1/usage/users?tenant_id=globex"))),
      expected("globex"),
    );
    assert.deepEqual(ok(await root.get("/v1/usage/users")).users, [], "the admin's own tenant");
  });
});
