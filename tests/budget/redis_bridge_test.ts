/**
 * The Upstash-REST-compatible bridge (scripts/redis-rest-bridge.ts) in front of
 * the real Redis on 127.0.0.1:6379, driven by the real `@upstash/redis` client
 * (default settings: base64 responses and auto-pipelining) and by raw fetch.
 */
import assert from "node:assert/strict";
import { Redis } from "@upstash/redis";
import { createClient } from "redis";
import { startBridge } from "../../scripts/redis-rest-bridge.ts";

const REDIS_URL = "redis://127.0.0.1:6379";

interface Ctx {
  url: string;
  token: string;
  /** Unique per test run; every key a test writes starts with it. */
  prefix: string;
  redis: Redis;
  /** POSTs `body` (JSON-encoded unless a string) with the bridge token unless overridden. */
  post(
    path: string,
    body: unknown,
    headers?: Record<string, string>,
  ): Promise<{ status: number; json: unknown }>;
}

async function deleteKeys(prefix: string) {
  const client = createClient({ url: REDIS_URL });
  client.on("error", () => {});
  await client.connect();
  try {
    for await (const batch of client.scanIterator({ MATCH: `${prefix}*`, COUNT: 100 })) {
      if (batch.length > 0) await client.del(batch);
    }
  } finally {
    await client.close();
  }
}

async function withBridge(fn: (ctx: Ctx) => Promise<void>) {
  const token = `tok-${crypto.randomUUID()}`;
  const prefix = `bt:${crypto.randomUUID()}:`;
  const bridge = await startBridge({ port: 0, token, redisUrl: REDIS_URL });
  try {
    const redis = new Redis({ url: bridge.url, token, enableTelemetry: false });
    const post: Ctx["post"] = async (path, body, headers = {}) => {
      const res = await fetch(`${bridge.url}${path}`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${token}`,
          "content-type": "application/json",
          ...headers,
        },
        body: typeof body === "string" ? body : JSON.stringify(body),
      });
      return { status: res.status, json: await res.json() };
    };
    await fn({ url: bridge.url, token, prefix, redis, post });
  } finally {
    try {
      await deleteKeys(prefix);
    } finally {
      await bridge.close();
    }
  }
}

function b64decode(b64: string): string {
  const binary = atob(b64);
  return new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0)));
}

function b64encode(text: string): string {
  let binary = "";
  for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

const TEXT = "héllo wörld ✓ 日本語 🚀";

Deno.test("bridge: @upstash/redis single commands round-trip (SET/GET, INCR, HSET/HGETALL, MGET, DEL)", async () => {
  await withBridge(async ({ redis, prefix }) => {
    const k = (s: string) => `${prefix}${s}`;
    assert.equal(await redis.set(k("text"), TEXT), "OK");
    assert.equal(await redis.get<string>(k("text")), TEXT);

    assert.equal(await redis.incr(k("n")), 1);
    assert.equal(await redis.incr(k("n")), 2);
    assert.equal(await redis.incrby(k("n"), -5), -3);

    assert.equal(await redis.hset(k("h"), { a: "x", b: "ü €" }), 2);
    assert.deepEqual(await redis.hgetall(k("h")), { a: "x", b: "ü €" });
    assert.equal(await redis.hgetall(k("absent-hash")), null);

    assert.deepEqual(await redis.mget(k("text"), k("missing"), k("n")), [TEXT, null, -3]);

    // Strings nested in an array reply, "OK" included, survive base64 decoding.
    assert.deepEqual(await redis.eval("return {'OK', 'ok', 7, ARGV[1]}", [], [TEXT]), [
      "OK",
      "ok",
      7,
      TEXT,
    ]);

    assert.equal(await redis.del(k("text"), k("n"), k("h"), k("missing")), 3);
    assert.equal(await redis.get(k("text")), null);
    assert.equal(await redis.exists(k("text"), k("n"), k("h")), 0);
  });
});

Deno.test("bridge: auto-pipelined concurrent commands keep their own results and errors", async () => {
  await withBridge(async ({ redis, prefix }) => {
    await redis.set(`${prefix}word`, "not a number");
    const settled = await Promise.allSettled([
      redis.incr(`${prefix}n`),
      redis.incr(`${prefix}word`),
      redis.set(`${prefix}t`, TEXT),
      redis.get(`${prefix}t`),
      redis.incr(`${prefix}n`),
    ]);
    assert.deepEqual(settled.map((s) => s.status), [
      "fulfilled",
      "rejected",
      "fulfilled",
      "fulfilled",
      "fulfilled",
    ]);
    const values = settled.map((s) => s.status === "fulfilled" ? s.value : undefined);
    assert.deepEqual(values, [1, undefined, "OK", TEXT, 2]);
    const reason = (settled[1] as PromiseRejectedResult).reason as Error;
    assert.match(reason.message, /ERR value is not an integer/);

    // An explicit pipeline: every command answered in order.
    const p = redis.pipeline();
    p.set(`${prefix}p`, TEXT);
    p.get(`${prefix}p`);
    p.incr(`${prefix}n`);
    p.mget(`${prefix}p`, `${prefix}missing`);
    assert.deepEqual(await p.exec(), ["OK", TEXT, 3, [TEXT, null]]);

    // keepErrors: the failing command is reported next to the others' results.
    const q = redis.pipeline();
    q.incr(`${prefix}n`);
    q.incr(`${prefix}word`);
    q.get(`${prefix}n`);
    const kept = await q.exec({ keepErrors: true });
    assert.equal(kept[0].result, 4);
    assert.match(String(kept[1].error), /^ERR value is not an integer/);
    assert.equal(kept[1].result, undefined);
    assert.equal(kept[2].result, 4);
  });
});

Deno.test("bridge: raw /pipeline returns one entry per command and an error entry fails only its command", async () => {
  await withBridge(async ({ post, prefix }) => {
    const res = await post("/pipeline", [
      ["SET", `${prefix}a`, "not a number"],
      ["INCR", `${prefix}a`],
      ["INCR", `${prefix}n`],
      ["INCRBY", `${prefix}n`, 41],
      ["GET", `${prefix}missing`],
      ["NOSUCHCOMMAND", "x"],
      ["GET", `${prefix}a`],
    ]);
    assert.equal(res.status, 200);
    const entries = res.json as Array<Record<string, unknown>>;
    assert.equal(entries.length, 7);
    assert.deepEqual(entries[0], { result: "OK" });
    assert.deepEqual(Object.keys(entries[1]), ["error"]);
    assert.match(String(entries[1].error), /^ERR value is not an integer or out of range/);
    assert.deepEqual(entries[2], { result: 1 });
    assert.deepEqual(entries[3], { result: 42 });
    assert.deepEqual(entries[4], { result: null });
    assert.deepEqual(Object.keys(entries[5]), ["error"]);
    assert.match(String(entries[5].error), /^ERR unknown command/);
    assert.deepEqual(entries[6], { result: "not a number" });

    // Not atomic: the commands after the failures were applied.
    const after = await post("/", ["GET", `${prefix}n`]);
    assert.deepEqual(after, { status: 200, json: { result: "42" } });
  });
});

Deno.test("bridge: /multi-exec runs atomically and reports a runtime error as an entry", async () => {
  await withBridge(async ({ post, redis, prefix }) => {
    const res = await post("/multi-exec", [
      ["SET", `${prefix}w`, "word"],
      ["INCR", `${prefix}w`],
      ["INCR", `${prefix}c`],
      ["GET", `${prefix}w`],
    ]);
    assert.equal(res.status, 200);
    const entries = res.json as Array<Record<string, unknown>>;
    assert.equal(entries.length, 4);
    assert.deepEqual(entries[0], { result: "OK" });
    assert.deepEqual(Object.keys(entries[1]), ["error"]);
    assert.match(String(entries[1].error), /^ERR value is not an integer or out of range/);
    assert.deepEqual(entries[2], { result: 1 });
    assert.deepEqual(entries[3], { result: "word" });

    // Through the client's multi().
    const tx = redis.multi();
    tx.set(`${prefix}x`, TEXT);
    tx.incr(`${prefix}c`);
    tx.get(`${prefix}x`);
    assert.deepEqual(await tx.exec(), ["OK", 2, TEXT]);

    // Atomic: no other command lands between the two INCRs of one transaction,
    // however many transactions run concurrently.
    const pairs = await Promise.all(
      Array.from(
        { length: 25 },
        () => post("/multi-exec", [["INCR", `${prefix}seq`], ["INCR", `${prefix}seq`]]),
      ),
    );
    const seen: number[] = [];
    for (const { status, json } of pairs) {
      assert.equal(status, 200);
      const [first, second] = (json as Array<{ result: number }>).map((e) => e.result);
      assert.equal(second, first + 1);
      seen.push(first, second);
    }
    assert.deepEqual(seen.sort((a, b) => a - b), Array.from({ length: 50 }, (_, i) => i + 1));
  });
});

Deno.test("bridge: createScript().exec falls back from EVALSHA to EVAL after SCRIPT FLUSH, then uses the cache", async () => {
  await withBridge(async ({ redis, prefix, url }) => {
    const source = "local n = redis.call('INCRBY', KEYS[1], ARGV[1]) return {KEYS[1], n, ARGV[2]}";
    const digest = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(source));
    const sha = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
    const script = redis.createScript<Array<string | number>>(source);

    // Records the command names the client sends to this bridge.
    const original = globalThis.fetch;
    const sent: string[] = [];
    globalThis.fetch = (input: string | URL | Request, init?: RequestInit) => {
      const href = input instanceof Request ? input.url : String(input);
      if (href.startsWith(url) && typeof init?.body === "string") {
        const body = JSON.parse(init.body);
        const commands: unknown[][] = new URL(href).pathname === "/" ? [body] : body;
        for (const cmd of commands) sent.push(String(cmd[0]).toUpperCase());
      }
      return original(input, init);
    };
    try {
      assert.equal(await redis.scriptFlush(), "OK");
      assert.deepEqual(await redis.scriptExists(sha), [0]);

      sent.length = 0;
      assert.deepEqual(await script.exec([`${prefix}s`], ["5", TEXT]), [`${prefix}s`, 5, TEXT]);
      assert.equal(script.sha1, sha);
      assert.deepEqual(sent, ["EVALSHA", "EVAL"]);
      assert.deepEqual(await redis.scriptExists(sha), [1]);

      sent.length = 0;
      assert.deepEqual(await script.exec([`${prefix}s`], ["2", "again"]), [
        `${prefix}s`,
        7,
        "again",
      ]);
      assert.deepEqual(sent, ["EVALSHA"]);
    } finally {
      globalThis.fetch = original;
    }
    assert.equal(await redis.get(`${prefix}s`), 7);
  });
});

Deno.test("bridge: errors come back in Upstash's shape", async () => {
  await withBridge(async ({ post, url, token, prefix }) => {
    // A bad single command: HTTP 400 with {"error": "ERR ..."}.
    const unknown = await post("/", ["NOSUCHCOMMAND", "a"]);
    assert.equal(unknown.status, 400);
    assert.deepEqual(Object.keys(unknown.json as object), ["error"]);
    assert.match((unknown.json as { error: string }).error, /^ERR unknown command/);

    await post("/", ["SET", `${prefix}w`, "word"]);
    const incr = await post("/", ["INCR", `${prefix}w`]);
    assert.deepEqual(incr, {
      status: 400,
      json: { error: "ERR value is not an integer or out of range" },
    });

    const noscript = await post("/", ["EVALSHA", "0".repeat(40), 0]);
    assert.equal(noscript.status, 400);
    assert.match((noscript.json as { error: string }).error, /^NOSCRIPT/);

    // The client turns it into a thrown error that carries the message.
    const strict = new Redis({ url, token, enableTelemetry: false, enableAutoPipelining: false });
    await assert.rejects(strict.incr(`${prefix}w`), /ERR value is not an integer/);

    // Wrong or missing token: 401 {"error":"Unauthorized"}, before anything runs.
    const badHeaders: Array<Record<string, string>> = [
      { authorization: "Bearer wrong" },
      { authorization: `Bearer ${token}x` },
      { authorization: token },
      {},
    ];
    for (const headers of badHeaders) {
      const res = await fetch(`${url}/`, {
        method: "POST",
        headers,
        body: JSON.stringify(["SET", `${prefix}unauth`, "1"]),
      });
      assert.equal(res.status, 401);
      assert.deepEqual(await res.json(), { error: "Unauthorized" });
    }
    const bad = new Redis({ url, token: "wrong", enableTelemetry: false, retry: false });
    await assert.rejects(bad.get(`${prefix}w`), /Unauthorized/);
    assert.deepEqual(await post("/", ["EXISTS", `${prefix}unauth`]), {
      status: 200,
      json: { result: 0 },
    });

    // Bodies that are not JSON, or not a command array.
    for (const path of ["/", "/pipeline", "/multi-exec"]) {
      const notJson = await post(path, "SET a b");
      assert.equal(notJson.status, 400, path);
      assert.match((notJson.json as { error: string }).error, /^ERR /);
      for (const body of [{ cmd: "GET" }, '"GET"', 42, []]) {
        const res = await post(path, body);
        assert.equal(res.status, 400, `${path} ${JSON.stringify(body)}`);
        assert.match((res.json as { error: string }).error, /^ERR /);
      }
    }
    // A pipeline whose entries are not commands.
    const mixed = await post("/pipeline", [["GET", `${prefix}w`], "GET"]);
    assert.equal(mixed.status, 400);
    assert.match((mixed.json as { error: string }).error, /^ERR /);
  });
});

Deno.test("bridge: Upstash-Encoding: base64 encodes strings but keeps a top-level OK and integers", async () => {
  await withBridge(async ({ post, prefix }) => {
    const b64 = { "Upstash-Encoding": "base64" };
    const key = `${prefix}t`;
    assert.deepEqual(await post("/", ["SET", key, TEXT], b64), {
      status: 200,
      json: { result: "OK" },
    });

    const got = await post("/", ["GET", key], b64);
    assert.equal(got.status, 200);
    const encoded = (got.json as { result: string }).result;
    assert.notEqual(encoded, TEXT);
    assert.equal(encoded, b64encode(TEXT));
    assert.equal(b64decode(encoded), TEXT);

    // Without the header the same value comes back as text.
    assert.deepEqual(await post("/", ["GET", key]), { status: 200, json: { result: TEXT } });

    assert.deepEqual(await post("/", ["INCR", `${prefix}n`], b64), {
      status: 200,
      json: { result: 1 },
    });
    assert.deepEqual(await post("/", ["GET", `${prefix}missing`], b64), {
      status: 200,
      json: { result: null },
    });

    // Arrays: every string encoded (a nested "OK" too), integers and nils kept.
    const mget = await post("/", ["MGET", key, `${prefix}missing`, `${prefix}n`], b64);
    assert.deepEqual(mget.json, { result: [b64encode(TEXT), null, b64encode("1")] });
    const evald = await post("/", ["EVAL", "return {'OK', 3, ARGV[1]}", 0, "ü"], b64);
    assert.deepEqual(evald.json, { result: [b64encode("OK"), 3, b64encode("ü")] });
    // A status reply other than OK is a string too.
    assert.deepEqual((await post("/", ["PING"], b64)).json, { result: b64encode("PONG") });

    // Pipeline and multi-exec: each entry's result is top-level; errors stay plain.
    for (const path of ["/pipeline", "/multi-exec"]) {
      const res = await post(path, [
        ["SET", `${prefix}p`, "ä"],
        ["GET", `${prefix}p`],
        ["INCR", `${prefix}p`],
        ["INCR", `${prefix}n`],
      ], b64);
      assert.equal(res.status, 200);
      const entries = res.json as Array<Record<string, unknown>>;
      assert.deepEqual(entries[0], { result: "OK" });
      assert.deepEqual(entries[1], { result: b64encode("ä") });
      assert.equal(b64decode(entries[1].result as string), "ä");
      assert.match(String(entries[2].error), /^ERR value is not an integer/);
      assert.equal(typeof entries[3].result, "number");
    }
  });
});
