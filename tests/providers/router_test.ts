import assert from "node:assert/strict";
import type { Clock } from "../../src/clock.ts";
import type { Config } from "../../src/config.ts";
import { GatewayError } from "../../src/errors.ts";
import { buildAdapters } from "../../src/providers/registry.ts";
import { createRouter, type RouteParams } from "../../src/providers/router.ts";
import { closedPort, type FakeOpenAI, startFakeOpenAI } from "../support/fake_openai.ts";
import { readSse, startGateway, testConfig } from "../support/gateway.ts";

const price = { input_per_1m: 1, output_per_1m: 1 };

/** A config whose alias `m` tries the given upstream models in order. */
function routedConfig(
  fake: FakeOpenAI,
  deployments: Array<{ provider: string; model: string }>,
  routing: Record<string, unknown> = {},
  extra: Record<string, unknown> = {},
): Config {
  return testConfig({
    providers: {
      up: { protocol: "openai", base_url: fake.url, api_key: "house-key" },
      down: { protocol: "openai", base_url: `http://127.0.0.1:${closedPort()}`, api_key: "k" },
    },
    models: { m: { deployments, price } },
    routing: { backoff_ms: 0, first_byte_timeout_ms: 200, ...routing },
    ...extra,
  });
}

function params(config: Config, over: Partial<RouteParams> = {}): RouteParams {
  return {
    alias: "m",
    model: config.models.m,
    request: { model: "m", messages: [{ role: "user", content: "hi" }] },
    mode: "managed",
    tenantId: "t1",
    signal: new AbortController().signal,
    ...over,
  };
}

function isCode(code: string) {
  return (err: unknown) => err instanceof GatewayError && err.code === code;
}

Deno.test("fails over past a down upstream, a 500 and a timeout, then counts it", async () => {
  const fake = startFakeOpenAI({ err: 500, slow: "hang", good: "ok" });
  try {
    const config = routedConfig(fake, [
      { provider: "down", model: "x" },
      { provider: "up", model: "err" },
      { provider: "up", model: "slow" },
      { provider: "up", model: "good" },
    ], { max_attempts: 4, timeout_ms: 300 });
    const router = createRouter({
      config,
      adapters: buildAdapters(config),
      clock: { now: Date.now },
    });
    const out = await router.complete(params(config));
    assert.equal(out.result.text, "answer from good");
    assert.equal(out.deployment, "good");
    assert.equal(out.attempts, 4);
    assert.deepEqual(fake.hits, { err: 1, slow: 1, good: 1 });
    const counters = router.counters();
    assert.equal(counters["down/x"].failovers, 1);
    assert.equal(counters["up/err"].failovers, 1);
    assert.equal(counters["up/slow"].failovers, 1);
    assert.equal(counters["up/good"].failovers, 0);
    assert.equal(counters["up/good"].attempts, 1);

    const streamed = await router.stream(params(config));
    let text = "";
    for await (const ev of streamed.events) if (ev.type === "text") text += ev.text;
    assert.equal(text, "answer from good");
    assert.equal(streamed.attempts, 4);
  } finally {
    await fake.close();
  }
});

Deno.test("when every deployment fails the code says why", async () => {
  const fake = startFakeOpenAI({ e500: 500, e503: 503, busy: 429, slow: "hang", bad: 400 });
  try {
    const cases: Array<[string[], string]> = [
      [["e500", "e503"], "provider.unavailable"],
      [["busy", "busy"], "provider.rate_limited"],
      [["slow"], "provider.timeout"],
      [["bad", "e500"], "request.invalid"],
    ];
    for (const [models, code] of cases) {
      const config = routedConfig(fake, models.map((model) => ({ provider: "up", model })), {
        max_attempts: 2,
        timeout_ms: 300,
      });
      const router = createRouter({
        config,
        adapters: buildAdapters(config),
        clock: { now: Date.now },
      });
      await assert.rejects(router.complete(params(config)), isCode(code), code);
      await assert.rejects(router.stream(params(config)), isCode(code), code);
    }
    assert.equal(fake.hits.e500, 2, "a 400 is the request's fault and is not retried elsewhere");
  } finally {
    await fake.close();
  }
});

Deno.test("the total timeout ends a non-streamed call that never answers", async () => {
  const fake = startFakeOpenAI({ slow: "hang" });
  try {
    const config = routedConfig(fake, [{ provider: "up", model: "slow" }], {
      max_attempts: 1,
      timeout_ms: 100,
      first_byte_timeout_ms: 10_000,
    });
    const router = createRouter({
      config,
      adapters: buildAdapters(config),
      clock: { now: Date.now },
    });
    await assert.rejects(router.complete(params(config)), isCode("provider.timeout"));
  } finally {
    await fake.close();
  }
});

Deno.test("a circuit opens after repeated failures and half-opens after the cooldown", async () => {
  const fake = startFakeOpenAI({ bad: 500, good: "ok" });
  try {
    let now = 1_000_000;
    const clock: Clock = { now: () => now };
    const config = routedConfig(fake, [
      { provider: "up", model: "bad" },
      { provider: "up", model: "good" },
    ], { breaker: { failure_threshold: 2, cooldown_ms: 5_000 } });
    const router = createRouter({ config, adapters: buildAdapters(config), clock });
    for (let i = 0; i < 2; i++) await router.complete(params(config));
    assert.equal(fake.hits.bad, 2);
    assert.equal(router.breakerState("up", "bad"), "open");
    await router.complete(params(config));
    assert.equal(fake.hits.bad, 2, "an open circuit is skipped");
    now += 5_000;
    assert.equal(router.breakerState("up", "bad"), "half-open");
    await router.complete(params(config));
    assert.equal(fake.hits.bad, 3, "one probe goes through when half-open");
    assert.equal(router.breakerState("up", "bad"), "open");
    assert.equal(fake.hits.good, 4);
  } finally {
    await fake.close();
  }
});

Deno.test("BYOK uses the tenant's key, managed the house key, and no key is byok.missing_key", async () => {
  const fake = startFakeOpenAI({ denied: 401 });
  try {
    const config = routedConfig(fake, [{ provider: "up", model: "good" }], {}, {
      tenants: { rich: { byok_keys: { up: "tenant-key" } } },
    });
    const router = createRouter({
      config,
      adapters: buildAdapters(config),
      clock: { now: Date.now },
    });
    await router.complete(params(config, { mode: "byok", tenantId: "rich" }));
    await router.complete(params(config, { mode: "managed", tenantId: "poor" }));
    assert.deepEqual(fake.authHeaders, ["Bearer tenant-key", "Bearer house-key"]);
    await assert.rejects(
      router.complete(params(config, { mode: "byok", tenantId: "poor" })),
      isCode("byok.missing_key"),
    );

    const rejected = routedConfig(
      fake,
      [{ provider: "up", model: "denied" }],
      { max_attempts: 1 },
      {
        tenants: { rich: { byok_keys: { up: "revoked-key" } } },
      },
    );
    const r2 = createRouter({
      config: rejected,
      adapters: buildAdapters(rejected),
      clock: { now: Date.now },
    });
    await assert.rejects(
      r2.complete(params(rejected, { mode: "byok", tenantId: "rich" })),
      isCode("byok.missing_key"),
    );
  } finally {
    await fake.close();
  }
});

Deno.test("a client cancel stops routing without failing over", async () => {
  const fake = startFakeOpenAI({ slow: "hang", good: "ok" });
  try {
    const config = routedConfig(fake, [
      { provider: "up", model: "slow" },
      { provider: "up", model: "good" },
    ], { first_byte_timeout_ms: 10_000 });
    const router = createRouter({
      config,
      adapters: buildAdapters(config),
      clock: { now: Date.now },
    });
    const ac = new AbortController();
    const pending = router.complete(params(config, { signal: ac.signal }));
    while (!fake.hits.slow) await new Promise((r) => setTimeout(r, 5));
    ac.abort(new Error("client left"));
    await assert.rejects(pending, /client left/);
    assert.equal(fake.hits.good, undefined);
  } finally {
    await fake.close();
  }
});

Deno.test("a failure after the first byte ends the SSE stream with an error event", async () => {
  const gw = await startGateway(testConfig({
    providers: { flaky: { protocol: "mock", fail: "mid_stream" } },
    models: { m: { deployments: [{ provider: "flaky", model: "x" }], price } },
  }));
  try {
    const res = await fetch(`${gw.url}/v1/chat/stream`, {
      method: "POST",
      headers: { authorization: `Bearer ${await gw.token()}` },
      body: JSON.stringify({ prompt: "hello" }),
    });
    assert.equal(res.status, 200);
    const frames = (await readSse(res)).map((e) => JSON.parse(e.data));
    assert.deepEqual(frames.map((f) => f.type), ["chat.token", "chat.token", "error"]);
    const error = frames[2];
    assert.equal(error.code, "provider.unavailable");
    assert.equal(error.retryable, true);
    assert.equal(error.usage.out_tokens, 3, "what was produced is accounted for");
    const line = gw.logs.find((l) => l.route === "/v1/chat/stream");
    assert.equal(line?.error_code, "provider.unavailable");
  } finally {
    await gw.close();
  }
});
