import assert from "node:assert/strict";
import OpenAI from "openai";
import { periodsAt } from "../../src/budget/store.ts";
import {
  readSse,
  startGateway,
  testConfig,
  type TestGateway,
  withFullGateway,
} from "../support/gateway.ts";

const price = { input_per_1m: 1000, output_per_1m: 1000 };
const rawConfig = {
  models: {
    "convergio-demo": { deployments: [{ provider: "demo", model: "big" }], price },
    "convergio-mini": {
      deployments: [{ provider: "demo", model: "mini" }],
      price: { input_per_1m: 1, output_per_1m: 1 },
    },
  },
  tenant_defaults: { rpm: 100, tpm: 1_000_000, daily_budget_usd: 100, monthly_budget_usd: 1000 },
  tenants: { acme: { downgrade_model: "convergio-mini" } },
};
const config = (raw: Record<string, unknown> = {}) => testConfig({ ...rawConfig, ...raw });

function post(gw: TestGateway, path: string, token: string, body: unknown) {
  return fetch(`${gw.url}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

const tenantDay = () => ({
  scope: "tenant" as const,
  id: "acme",
  period: "day" as const,
  bucket: periodsAt(Date.now()).day,
});

Deno.test("rate-limit headers ride on successful answers, streamed or not", async () => {
  const gw = await startGateway(config());
  try {
    const token = await gw.token({ tenant: "acme", mode: "managed" });
    const res = await post(gw, "/v1/chat", token, { prompt: "hi" });
    await res.body?.cancel();
    assert.equal(res.headers.get("x-ratelimit-limit-requests"), "100");
    assert.equal(res.headers.get("x-ratelimit-remaining-requests"), "99");
    assert.match(res.headers.get("x-ratelimit-reset-requests") ?? "", /^\d+(\.\d+)?(ms|s)$/);
    assert.equal(res.headers.get("x-ratelimit-limit-tokens"), "1000000");
    const stream = await post(gw, "/v1/chat/completions", token, {
      model: "convergio-demo",
      messages: [{ role: "user", content: "hi" }],
      stream: true,
    });
    await stream.body?.cancel();
    assert.equal(stream.headers.get("x-ratelimit-remaining-requests"), "98");
  } finally {
    await gw.close();
  }
});

Deno.test("OpenAI SDK sees quota.exceeded as a RateLimitError with Retry-After", async () => {
  const gw = await startGateway(config({ tenant_defaults: { rpm: 2 } }));
  try {
    const client = new OpenAI({
      baseURL: `${gw.url}/v1`,
      apiKey: await gw.token({ tenant: "acme" }),
      maxRetries: 0,
    });
    const ask = () =>
      client.chat.completions.create({
        model: "convergio-demo",
        messages: [{ role: "user", content: "x" }],
      });
    await ask();
    await ask();
    await assert.rejects(ask(), (err) => {
      assert.ok(err instanceof OpenAI.RateLimitError);
      assert.equal(err.code, "quota.exceeded");
      assert.equal(err.headers?.get("retry-after"), "30");
      assert.equal(err.headers?.get("x-ratelimit-remaining-requests"), "0");
      return true;
    });
  } finally {
    await gw.close();
  }
});

Deno.test("at 90% the tenant's cheaper model answers and the response says so", async () => {
  const gw = await startGateway(config());
  try {
    await gw.deps.edge!.store.setSpend(tenantDay(), 95_000_000);
    const token = await gw.token({ tenant: "acme", mode: "managed" });
    const res = await post(gw, "/v1/chat", token, { prompt: "hi" });
    const body = await res.json();
    assert.equal(res.headers.get("x-convergio-downgraded-from"), "convergio-demo");
    assert.equal(body.model, "convergio-mini");
    assert.equal(body.usage.downgraded_from, "convergio-demo");

    const stream = await post(gw, "/v1/chat/stream", token, { prompt: "hi" });
    assert.equal(stream.headers.get("x-convergio-downgraded-from"), "convergio-demo");
    const frames = (await readSse(stream)).map((e) => JSON.parse(e.data));
    const done = frames[frames.length - 1];
    assert.equal(done.model, "convergio-mini");
    assert.equal(done.usage.downgraded_from, "convergio-demo");
    const line = gw.logs.find((l) => l.route === "/v1/chat/stream");
    assert.equal(line?.model, "convergio-mini");
  } finally {
    await gw.close();
  }
});

Deno.test("at 110% managed requests get 402 budget.blocked on every route; BYOK still works", async () => {
  const gw = await startGateway(config());
  try {
    await gw.deps.edge!.store.setSpend(tenantDay(), 110_000_000);
    const managed = await gw.token({ tenant: "acme", mode: "managed" });
    for (
      const [path, body] of [
        ["/v1/chat", { prompt: "hi" }],
        ["/v1/chat/stream", { prompt: "hi" }],
        ["/v1/chat/completions", {
          model: "convergio-demo",
          messages: [{ role: "user", content: "x" }],
        }],
        [
          "/v1/chat/completions",
          { model: "convergio-demo", stream: true, messages: [{ role: "user", content: "x" }] },
        ],
      ] as const
    ) {
      const res = await post(gw, path, managed, body);
      assert.equal(res.status, 402, path);
      assert.equal((await res.json()).error.code, "budget.blocked", path);
    }
    const byok = await post(gw, "/v1/chat", await gw.token({ tenant: "acme", mode: "byok" }), {
      prompt: "hi",
    });
    assert.equal(byok.status, 200);
    await byok.body?.cancel();
  } finally {
    await gw.close();
  }
});

Deno.test("/v1/me reports limits and budget state", async () => {
  const gw = await startGateway(config({ tenants: { acme: { limits: { rpm: 7 } } } }));
  try {
    await gw.deps.edge!.store.setSpend(tenantDay(), 25_000_000);
    const res = await fetch(`${gw.url}/v1/me`, {
      headers: { authorization: `Bearer ${await gw.token({ tenant: "acme" })}` },
    });
    const me = await res.json();
    assert.equal(me.limits.rpm, 7);
    assert.equal(me.budget.day.spent_usd, 25);
    assert.equal(me.budget.day.budget_usd, 100);
    assert.equal(me.budget.day.fraction, 0.25);
    assert.equal(me.budget.month.spent_usd, 0);
    assert.equal(me.budget.override, null);
    assert.deepEqual(me.budget.thresholds, { alert: 0.8, downgrade: 0.9, block: 1.1 });
  } finally {
    await gw.close();
  }
});

Deno.test("admin budget override: admin only, time-limited with a reason, audited, lifts the block", async () => {
  await withFullGateway(rawConfig, async (gw) => {
    await gw.deps.edge!.store.setSpend(tenantDay(), 120_000_000);
    const path = "/admin/tenants/acme/budget-override";
    const user = await gw.token({ tenant: "acme" });
    const admin = (await gw.deps.tokens.mint({
      user_id: "ops",
      tenant_id: "platform",
      roles: ["admin"],
      mode: "byok",
      ttl_s: 600,
    })).token;
    const managed = await gw.token({ tenant: "acme", mode: "managed" });
    const auth = (t: string) => ({
      authorization: `Bearer ${t}`,
      "content-type": "application/json",
    });

    const forbidden = await fetch(`${gw.url}${path}`, {
      method: "PUT",
      headers: auth(user),
      body: JSON.stringify({ reason: "please", ttl_s: 60 }),
    });
    assert.equal(forbidden.status, 403);
    assert.equal((await forbidden.json()).error.code, "auth.forbidden");

    const bad = await fetch(`${gw.url}${path}`, {
      method: "PUT",
      headers: auth(admin),
      body: JSON.stringify({ reason: "x", ttl_s: 10 ** 9 }),
    });
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).error.code, "request.invalid");

    const none = await fetch(`${gw.url}${path}`, { headers: auth(admin) });
    assert.equal(none.status, 404);
    await none.body?.cancel();

    const set = await fetch(`${gw.url}${path}`, {
      method: "PUT",
      headers: auth(admin),
      body: JSON.stringify({ reason: "exam week", ttl_s: 3600 }),
    });
    assert.equal(set.status, 200);
    const { override } = await set.json();
    assert.equal(override.by, "ops");
    assert.equal(override.reason, "exam week");

    const got = await fetch(`${gw.url}${path}`, { headers: auth(admin) });
    assert.equal((await got.json()).override.tenant_id, "acme");

    const lifted = await post(gw, "/v1/chat", managed, { prompt: "hi" });
    assert.equal(lifted.status, 200);
    await lifted.body?.cancel();

    const cleared = await fetch(`${gw.url}${path}`, { method: "DELETE", headers: auth(admin) });
    assert.equal((await cleared.json()).cleared, true);
    const blocked = await post(gw, "/v1/chat", managed, { prompt: "hi" });
    assert.equal(blocked.status, 402);
    await blocked.body?.cancel();
    const audit = await fetch(`${gw.url}/admin/audit?action=budget_override`, {
      headers: auth(admin),
    });
    const entries = (await audit.json()).entries;
    assert.deepEqual(entries.map((e: { action: string }) => e.action), [
      "budget_override.clear",
      "budget_override.set",
    ]);
    assert.equal(entries[1].actor, "ops");
    assert.equal(entries[1].reason, "exam week");
  });
});

Deno.test("/metrics exposes the guardrail counters in Prometheus text", async () => {
  const gw = await startGateway(config({ tenant_defaults: { rpm: 1 } }));
  try {
    const token = await gw.token({ tenant: "acme" });
    for (let i = 0; i < 2; i++) {
      await (await post(gw, "/v1/chat", token, { prompt: "x" })).body?.cancel();
    }
    const res = await fetch(`${gw.url}/metrics`);
    assert.match(res.headers.get("content-type") ?? "", /text\/plain/);
    assert.match(
      await res.text(),
      /convergio_guardrail_actions_total\{action="rate_limit",lane="byok"\} 1/,
    );
  } finally {
    await gw.close();
  }
});
