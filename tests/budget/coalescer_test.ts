import assert from "node:assert/strict";
import { Redis } from "@upstash/redis";
import { startBridge } from "../../scripts/redis-rest-bridge.ts";
import { ScriptCoalescer } from "../../src/budget/coalescer.ts";

const SCRIPT = "return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}";

async function withRedis(fn: (redis: Redis, roundTrips: () => number) => Promise<void>) {
  const token = crypto.randomUUID();
  const bridge = await startBridge({ port: 0, token, redisUrl: "redis://127.0.0.1:6379" });
  const redis = new Redis({
    url: bridge.url,
    token,
    enableTelemetry: false,
    enableAutoPipelining: false,
  });
  try {
    await fn(redis, bridge.roundTrips);
  } finally {
    await bridge.close();
  }
}

Deno.test("concurrent calls share pipelined round trips and each gets its own answer", async () => {
  await withRedis(async (redis, roundTrips) => {
    const key = `coalesce:${crypto.randomUUID()}`;
    const coalescer = new ScriptCoalescer(redis, SCRIPT);
    await coalescer.exec([key], ["warm"]);
    const before = roundTrips();
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => coalescer.exec([key], [`a${i}`])),
    ) as Array<[string, string, number]>;
    const trips = roundTrips() - before;
    assert.ok(trips < 50 && trips >= 1, `50 calls took ${trips} round trips`);
    assert.deepEqual(results.map((r) => r[1]), Array.from({ length: 50 }, (_, i) => `a${i}`));
    assert.deepEqual(
      results.map((r) => r[2]).sort((a, b) => a - b),
      Array.from({ length: 50 }, (_, i) => i + 2),
    );
    await redis.del(key);
  });
});

Deno.test("a script missing from Redis is loaded once and the calls retried", async () => {
  await withRedis(async (redis) => {
    const key = `coalesce:${crypto.randomUUID()}`;
    await redis.scriptFlush();
    const coalescer = new ScriptCoalescer(redis, SCRIPT);
    const [a, b] = await Promise.all([
      coalescer.exec([key], ["x"]),
      coalescer.exec([key], ["y"]),
    ]) as Array<
      [string, string, number]
    >;
    assert.equal(a[1], "x");
    assert.equal(b[1], "y");
    await redis.del(key);
  });
});

Deno.test("a script error rejects only its own call", async () => {
  await withRedis(async (redis) => {
    const coalescer = new ScriptCoalescer(
      redis,
      "if ARGV[1] == 'bad' then error('boom') end return 1",
    );
    const [ok, bad] = await Promise.allSettled([
      coalescer.exec([], ["good"]),
      coalescer.exec([], ["bad"]),
    ]);
    assert.equal(ok.status, "fulfilled");
    assert.equal(bad.status, "rejected");
  });
});

Deno.test("an unreachable Redis rejects every waiting call", async () => {
  const redis = new Redis({
    url: "http://127.0.0.1:9",
    token: "x",
    retry: false,
    enableTelemetry: false,
  });
  const coalescer = new ScriptCoalescer(redis, SCRIPT);
  const results = await Promise.allSettled([
    coalescer.exec(["k"], ["1"]),
    coalescer.exec(["k"], ["2"]),
  ]);
  assert.deepEqual(results.map((r) => r.status), ["rejected", "rejected"]);
});
