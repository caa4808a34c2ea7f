/**
 * Budget and burst limits hold across replicas: three real gateway processes
 * share one Redis (through the REST bridge) and take concurrent traffic.
 */
import assert from "node:assert/strict";
import { createClient } from "redis";
import { startBridge } from "../../scripts/redis-rest-bridge.ts";
import { keys, periodsAt, requestScopes, THRESHOLDS, usdToMicro } from "../../src/budget/store.ts";
import type { ChatRequest } from "../../src/providers/chat_schema.ts";
import { estimatePromptTokens } from "../../src/providers/token_estimate.ts";
import { type GatewayProcesses, startProcesses } from "../support/processes.ts";

const REDIS_URL = "redis://127.0.0.1:6379";
const PRICE = { input_per_1m: 1, output_per_1m: 10 };
const PROMPT = "hi";
const MAX_TOKENS = 10;

/** Deletes every key under a test's prefix, so runs leave nothing behind. */
async function dropPrefix(prefix: string) {
  const redis = createClient({ url: REDIS_URL });
  await redis.connect();
  try {
    const found = await redis.keys(`${prefix}:*`);
    if (found.length) await redis.del(found);
  } finally {
    await redis.close();
  }
}

async function readCounter(key: string): Promise<number> {
  const redis = createClient({ url: REDIS_URL });
  await redis.connect();
  try {
    return Number(await redis.get(key) ?? 0);
  } finally {
    await redis.close();
  }
}

function gatewayConfig(
  bridge: { url: string },
  token: string,
  prefix: string,
  tenant: string,
  limits: Record<string, number>,
) {
  return {
    providers: { demo: { protocol: "mock" } },
    models: {
      "budget-demo": {
        deployments: [{ provider: "demo", model: "demo-large" }],
        price: PRICE,
      },
    },
    tenants: { [tenant]: { limits } },
    guardrails: {
      store: "redis",
      // Generous: the test is about limits under concurrency, not store latency.
      redis: { url: bridge.url, token, prefix, timeout_ms: 10_000 },
      global_daily_cap_usd: 0,
    },
  };
}

interface Outcome {
  status: number;
  headers: Headers;
  body: { error?: { code: string; retryable: boolean } };
}

/** Fires `n` requests at once, spread round-robin over the processes. */
function fire(gw: GatewayProcesses, token: string, n: number): Promise<Outcome[]> {
  const body = JSON.stringify({
    model_hint: "budget-demo",
    prompt: PROMPT,
    max_tokens: MAX_TOKENS,
  });
  return Promise.all(Array.from({ length: n }, async (_, i) => {
    const res = await fetch(`${gw.urls[i % gw.urls.length]}/v1/chat`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body,
    });
    return { status: res.status, headers: res.headers, body: await res.json() };
  }));
}

function countBy(outcomes: Outcome[]) {
  const counts: Record<string, number> = {};
  for (const o of outcomes) {
    const key = `${o.status} ${o.body.error?.code ?? "ok"}`;
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return counts;
}

Deno.test("3 replicas on one Redis: concurrent managed spend stops within one reservation of the block point", async () => {
  const prefix = `test-conc-budget-${crypto.randomUUID()}`;
  const bridgeToken = crypto.randomUUID();
  const bridge = await startBridge({ port: 0, token: bridgeToken, redisUrl: REDIS_URL });
  const tenant = "acme";
  const user = "alice";
  const dailyBudgetUsd = 0.0045;
  let gw: GatewayProcesses | undefined;
  try {
    gw = await startProcesses(
      3,
      gatewayConfig(bridge, bridgeToken, prefix, tenant, {
        rpm: 100_000,
        tpm: 100_000_000,
        daily_budget_usd: dailyBudgetUsd,
        monthly_budget_usd: 1000,
      }),
    );
    const token = await gw.token({ tenant, user, mode: "managed" });
    const outcomes = await fire(gw, token, 200);
    const statuses = await gw.stop();
    gw = undefined;
    assert.ok(statuses.every((s) => s.success), "SIGTERM shuts every replica down cleanly");

    // The guard's own arithmetic: worst case reserved, actual settled.
    const request: ChatRequest = {
      model: "budget-demo",
      messages: [{ role: "user", content: PROMPT }],
    };
    const prompt = estimatePromptTokens(request);
    const worst = Math.ceil(prompt * PRICE.input_per_1m + MAX_TOKENS * PRICE.output_per_1m);
    const blockPoint = usdToMicro(dailyBudgetUsd) * THRESHOLDS.block;

    const counts = countBy(outcomes);
    const ok = outcomes.filter((o) => o.status === 200);
    const blocked = outcomes.filter((o) => o.status === 402);
    assert.deepEqual(
      Object.keys(counts).sort(),
      ["200 ok", "402 budget.blocked"],
      `only successes and budget blocks: ${JSON.stringify(counts)}`,
    );
    assert.equal(ok.length + blocked.length, 200);
    assert.ok(ok.length > 0 && blocked.length > 0, JSON.stringify(counts));
    for (const o of blocked) assert.equal(o.body.error?.retryable, false);

    const periods = periodsAt(Date.now());
    const dayKey = keys(prefix).spend(requestScopes(tenant, user, periods)[0]);
    const settled = await readCounter(dayKey);
    // Every admitted request settled to its actual cost (the usage it reported).
    const actual = ok.reduce(
      (sum, o) => {
        const u = (o.body as { usage: { in_tokens: number; out_tokens: number } }).usage;
        return sum +
          Math.ceil(u.in_tokens * PRICE.input_per_1m + u.out_tokens * PRICE.output_per_1m);
      },
      0,
    );
    console.log(
      `budget: ${ok.length} admitted, ${blocked.length} blocked; settled ${settled} µ$, ` +
        `block point ${blockPoint} µ$, worst-case reservation ${worst} µ$, ` +
        `overshoot ${settled - blockPoint} µ$`,
    );
    assert.equal(settled, actual, "settled spend is the sum of the admitted requests' costs");
    assert.ok(
      settled <= blockPoint + worst,
      `settled ${settled} exceeds block point ${blockPoint} + one reservation ${worst}`,
    );
  } finally {
    await gw?.stop();
    await bridge.close();
    await dropPrefix(prefix);
  }
});

Deno.test("3 replicas on one Redis: a tenant's rpm holds across replicas under concurrency", async () => {
  const prefix = `test-conc-rpm-${crypto.randomUUID()}`;
  const bridgeToken = crypto.randomUUID();
  const bridge = await startBridge({ port: 0, token: bridgeToken, redisUrl: REDIS_URL });
  const tenant = "acme";
  let gw: GatewayProcesses | undefined;
  try {
    gw = await startProcesses(
      3,
      gatewayConfig(bridge, bridgeToken, prefix, tenant, {
        rpm: 30,
        user_rpm: 30,
        tpm: 100_000_000,
        daily_budget_usd: 1000,
        monthly_budget_usd: 1000,
      }),
    );
    const token = await gw.token({ tenant, user: "alice", mode: "managed" });
    const outcomes = await fire(gw, token, 60);
    const counts = countBy(outcomes);
    const ok = outcomes.filter((o) => o.status === 200);
    const limited = outcomes.filter((o) => o.status === 429);
    console.log(`rpm 30: ${ok.length} admitted of 60 (${JSON.stringify(counts)})`);
    assert.equal(ok.length + limited.length, 60, JSON.stringify(counts));
    assert.ok(ok.length >= 30 && ok.length <= 31, `admitted ${ok.length}, want 30 (±1 refill)`);
    for (const o of limited) {
      assert.equal(o.body.error?.code, "quota.exceeded");
      assert.equal(o.body.error?.retryable, true);
      assert.match(o.headers.get("retry-after") ?? "", /^[1-9]\d*$/);
      assert.equal(o.headers.get("x-ratelimit-limit-requests"), "30");
      assert.match(o.headers.get("x-ratelimit-remaining-requests") ?? "", /^\d+$/);
      assert.ok(o.headers.get("x-ratelimit-reset-requests"));
      assert.ok(o.headers.get("x-ratelimit-limit-tokens"));
      assert.ok(o.headers.get("x-ratelimit-remaining-tokens"));
      assert.ok(o.headers.get("x-ratelimit-reset-tokens"));
    }
    for (const o of ok) assert.equal(o.headers.get("x-ratelimit-limit-requests"), "30");
    const statuses = await gw.stop();
    gw = undefined;
    assert.ok(statuses.every((s) => s.success), "SIGTERM shuts every replica down cleanly");
  } finally {
    await gw?.stop();
    await bridge.close();
    await dropPrefix(prefix);
  }
});
