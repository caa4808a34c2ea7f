import assert from "node:assert/strict";
import { Redis } from "@upstash/redis";
import { startBridge } from "../../scripts/redis-rest-bridge.ts";
import { ScriptCoalescer } from "../../src/budget/coalescer.ts";
import { type Pipeline, restPipeline } from "../../src/budget/rest_pipeline.ts";

const SCRIPT = "return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}";

async function withRedis(
  fn: (redis: Redis, pipeline: Pipeline, roundTrips: () => number) => Promise<void>,
) {
  const token = crypto.randomUUID();
  const bridge = await startBridge({ port: 0, token, redisUrl: "redis://127.0.0.1:6379" });
  const redis = new Redis({
    url: bridge.url,
    token,
    enableTelemetry: false,
    enableAutoPipelining: false,
  });
  try {
    await fn(redis, restPipeline({ url: bridge.url, token, timeoutMs: 5000 }), bridge.roundTrips);
  } finally {
    await bridge.close();
  }
}

Deno.test("concurrent calls share pipelined round trips and each gets its own answer", async () => {
  await withRedis(async (redis, pipeline, roundTrips) => {
    const key = `coalesce:${crypto.randomUUID()}`;
    const coalescer = new ScriptCoalescer(pipeline, SCRIPT);
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

Deno.test("with a linger, calls made one after another share the first round trip", async () => {
  await withRedis(async (redis, pipeline, roundTrips) => {
    const key = `coalesce:${crypto.randomUUID()}`;
    const coalescer = new ScriptCoalescer(pipeline, SCRIPT, 20);
    await coalescer.exec([key], ["warm"]);
    const before = roundTrips();
    const calls = [];
    // Sequential callers, none waiting for the previous one's answer.
    for (let i = 0; i < 10; i++) calls.push(coalescer.exec([key], [`s${i}`]));
    await Promise.all(calls);
    assert.equal(roundTrips() - before, 1);
    await redis.del(key);
  });
});

Deno.test("a script missing from Redis is loaded once and the calls retried", async () => {
  await withRedis(async (redis, pipeline) => {
    const key = `coalesce:${crypto.randomUUID()}`;
    await redis.scriptFlush();
    const coalescer = new ScriptCoalescer(pipeline, SCRIPT);
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
  await withRedis(async (_redis, pipeline) => {
    const coalescer = new ScriptCoalescer(
      pipeline,
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
  const pipeline = restPipeline({ url: "http://127.0.0.1:9", token: "x", timeoutMs: 1000 });
  const coalescer = new ScriptCoalescer(pipeline, SCRIPT);
  const results = await Promise.allSettled([
    coalescer.exec(["k"], ["1"]),
    coalescer.exec(["k"], ["2"]),
  ]);
  assert.deepEqual(results.map((r) => r.status), ["rejected", "rejected"]);
});

Deno.test("a script that cannot be loaded again rejects the calls that needed it", async () => {
  let calls = 0;
  const pipeline: Pipeline = (commands) => {
    calls++;
    return Promise.resolve(
      commands.map((c) =>
        c[0] === "SCRIPT" ? { error: "ERR loading refused" } : { error: "NOSCRIPT missing" }
      ),
    );
  };
  const coalescer = new ScriptCoalescer(pipeline, SCRIPT);
  await assert.rejects(coalescer.exec(["k"], ["1"]), /loading refused/);
  assert.equal(calls, 2);
});

Deno.test("the pipeline client refuses a wrong token, a non-pipeline answer and a slow server", async () => {
  await withRedis(async (_redis, pipeline) => {
    assert.deepEqual(await pipeline([["PING"], ["NOSUCHCOMMAND"]]).then((r) => r.length), 2);
  });
  const token = crypto.randomUUID();
  const bridge = await startBridge({ port: 0, token, redisUrl: "redis://127.0.0.1:6379" });
  try {
    const wrong = restPipeline({ url: bridge.url, token: "wrong", timeoutMs: 5000 });
    await assert.rejects(wrong([["PING"]]), /redis pipeline failed: Unauthorized/);
  } finally {
    await bridge.close();
  }
  const odd = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) =>
      new URL(req.url).pathname === "/slow/pipeline"
        ? new Promise<Response>((resolve) =>
          req.signal.addEventListener("abort", () => resolve(new Response(null)))
        )
        : Response.json({ result: "not a list" }),
  );
  try {
    const url = `http://127.0.0.1:${odd.addr.port}`;
    await assert.rejects(
      restPipeline({ url, token: "t", timeoutMs: 5000 })([["PING"]]),
      /redis pipeline failed: 200/,
    );
    await assert.rejects(
      restPipeline({ url: `${url}/slow/`, token: "t", timeoutMs: 50 })([["PING"]]),
      /TimeoutError|timed out|aborted/i,
    );
  } finally {
    await odd.shutdown();
  }
});
