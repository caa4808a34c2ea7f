import assert from "node:assert/strict";
import { createBatcher } from "../../src/metering/batcher.ts";
import { verifyBody } from "../../src/metering/signature.ts";
import { Spool } from "../../src/metering/spool.ts";
import type { UsageEvent } from "../../src/metering/usage_event.ts";
import { closedPort } from "../support/fake_openai.ts";
import {
  capturedLog,
  createMetrics,
  type Metrics,
  metricValue,
  usageEvent,
  waitFor,
} from "./_helpers.ts";

const SECRET = "edge-aggregator-secret";
const PATH = "/internal/metering/batches";

interface Received {
  batch_id: string;
  edge_id: string;
  events: UsageEvent[];
}

/**
 * The aggregator stand-in: verifies each request's signature like the real
 * one, records what it accepts, and answers from `script` (status per
 * attempt; 200 once the script runs out).
 */
function aggregator(script: Array<number | "reject-one"> = []) {
  const attempts: Received[] = [];
  const delivered: Received[] = [];
  const badSignatures: string[] = [];
  const seen = new Set<string>();
  const handler = async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    if (req.method !== "POST" || url.pathname !== PATH) {
      return new Response("not found", { status: 404 });
    }
    const body = await req.text();
    const header = req.headers.get("x-convergio-signature") ?? undefined;
    if (!(await verifyBody(SECRET, body, header, Date.now()))) {
      badSignatures.push(header ?? "(none)");
      return new Response("bad signature", { status: 401 });
    }
    assert.equal(req.headers.get("content-type"), "application/json");
    const batch = JSON.parse(body) as Received;
    attempts.push(batch);
    const step = script.shift() ?? 200;
    if (typeof step === "number" && step !== 200) {
      return new Response(step === 400 ? "batch is malformed: events missing" : "unavailable", {
        status: step,
      });
    }
    delivered.push(batch);
    let accepted = 0;
    let duplicates = 0;
    for (const e of batch.events) {
      if (seen.has(e.request_id)) duplicates++;
      else {
        seen.add(e.request_id);
        accepted++;
      }
    }
    const rejected = step === "reject-one" ? [{ position: 0, reason: "user_id: Required" }] : [];
    return Response.json({ batch_id: batch.batch_id, accepted, duplicates, rejected });
  };
  return { handler, attempts, delivered, badSignatures };
}

type Stub = ReturnType<typeof aggregator>;

function serve(stub: Stub, port = 0) {
  return Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, stub.handler);
}

interface Setup {
  url: string;
  fetch?: (req: Request) => Promise<Response>;
  batchSize?: number;
  flushIntervalMs?: number;
  file?: string;
}

async function setup(s: Setup) {
  const metrics = createMetrics();
  const logs = capturedLog();
  const spool = await Spool.open({
    maxEvents: 10_000,
    file: s.file,
    log: logs.log,
    metrics,
    now: Date.now,
  });
  const batcher = createBatcher({
    aggregatorUrl: s.url,
    secret: SECRET,
    edgeId: "edge-1",
    batchSize: s.batchSize ?? 3,
    flushIntervalMs: s.flushIntervalMs ?? 60_000,
    retryBaseMs: 5,
    retryMaxMs: 20,
    spool,
    clock: { now: Date.now },
    log: logs.log,
    metrics,
    fetch: s.fetch,
  });
  return { batcher, spool, metrics, logs };
}

const batches = (m: Metrics, outcome: string) =>
  metricValue(m, "convergio_metering_batches_total", { outcome });

/** Runs `fn` with a stub on a loopback port, shutting both down after. */
async function withServedStub(
  stub: Stub,
  fn: (url: string) => Promise<void>,
): Promise<void> {
  const server = serve(stub);
  try {
    await fn(`http://127.0.0.1:${server.addr.port}`);
  } finally {
    await server.shutdown();
  }
}

const ids = (events: UsageEvent[]) => events.map((e) => e.request_id);

Deno.test("batcher: a batch is cut as soon as batchSize events are added, signed and delivered", async () => {
  const stub = aggregator();
  await withServedStub(stub, async (url) => {
    const { batcher, spool, metrics } = await setup({ url, batchSize: 3 });
    try {
      const events = [usageEvent(), usageEvent(), usageEvent()];
      batcher.add(events[0]);
      batcher.add(events[1]);
      assert.equal(batcher.buffered, 2);
      assert.deepEqual(spool.size, { batches: 0, events: 0 }, "no batch below the size");
      batcher.add(events[2]);
      assert.equal(batcher.buffered, 0);
      assert.deepEqual(spool.size, { batches: 1, events: 3 }, "spooled at once on the 3rd");
      await waitFor(() => stub.delivered.length === 1, "the size-cut batch");
      await waitFor(() => spool.size.batches === 0, "the ack");
      assert.deepEqual(stub.delivered[0].events, events);
      assert.equal(stub.delivered[0].edge_id, "edge-1");
      assert.match(stub.delivered[0].batch_id, /^[0-9a-f-]{36}$/);
      assert.deepEqual(stub.badSignatures, []);
      assert.equal(await batches(metrics, "acked"), 1);
      assert.equal(await batches(metrics, "retry"), 0);
    } finally {
      await batcher.close(1_000);
    }
  });
});

Deno.test("batcher: buffered events are flushed by the interval timer", async () => {
  const stub = aggregator();
  await withServedStub(stub, async (url) => {
    const { batcher, spool } = await setup({ url, batchSize: 100, flushIntervalMs: 10 });
    try {
      const events = [usageEvent(), usageEvent()];
      for (const e of events) batcher.add(e);
      await waitFor(() => stub.delivered.length === 1, "the timed flush");
      assert.deepEqual(ids(stub.delivered[0].events), ids(events));
      await waitFor(() => spool.size.batches === 0, "the ack");
      assert.equal(batcher.buffered, 0);
    } finally {
      await batcher.close(1_000);
    }
    assert.equal(stub.delivered.length, 1, "an empty buffer makes no batch");
  });
});

Deno.test("batcher: 503 twice then 200 → delivered once, same batch_id, spool empty, metrics", async () => {
  const stub = aggregator([503, 503]);
  await withServedStub(stub, async (url) => {
    const { batcher, spool, metrics, logs } = await setup({ url, batchSize: 3 });
    try {
      const events = [usageEvent(), usageEvent(), usageEvent()];
      for (const e of events) batcher.add(e);
      await batcher.drain();
      assert.equal(stub.attempts.length, 3);
      assert.equal(new Set(stub.attempts.map((a) => a.batch_id)).size, 1, "one batch, retried");
      assert.equal(stub.delivered.length, 1);
      assert.deepEqual(stub.delivered[0].events, events);
      assert.deepEqual(spool.size, { batches: 0, events: 0 });
      assert.equal(await batches(metrics, "retry"), 2);
      assert.equal(await batches(metrics, "acked"), 1);
      assert.equal(await batches(metrics, "rejected"), 0);
      assert.equal(logs.find("warn", "will retry").length, 2);
      const busy = await metricValue(metrics, "convergio_metering_sender_seconds_total", {
        state: "busy",
      });
      const idle = await metricValue(metrics, "convergio_metering_sender_seconds_total", {
        state: "idle",
      });
      assert.ok(busy > 0, `busy ${busy}`);
      assert.ok(idle > 0, `idle ${idle}`);
    } finally {
      await batcher.close(1_000);
    }
  });
});

Deno.test("batcher (fetch option): batches are delivered in order, each once, across failures", async () => {
  const stub = aggregator([503, 200, 500, 502, 200, 429, 200]);
  const { batcher, spool, metrics } = await setup({
    url: "http://aggregator.invalid/",
    batchSize: 2,
    fetch: stub.handler,
  });
  try {
    const events = Array.from({ length: 8 }, () => usageEvent());
    for (const e of events) batcher.add(e);
    await batcher.drain();
    assert.equal(stub.delivered.length, 4);
    assert.deepEqual(stub.delivered.flatMap((b) => ids(b.events)), ids(events), "in order");
    assert.equal(new Set(stub.delivered.map((b) => b.batch_id)).size, 4, "each batch once");
    assert.deepEqual(spool.size, { batches: 0, events: 0 });
    assert.equal(await batches(metrics, "retry"), 4);
    assert.equal(await batches(metrics, "acked"), 4);
    assert.deepEqual(stub.badSignatures, []);
  } finally {
    await batcher.close(1_000);
  }
});

Deno.test("batcher (fetch option): the endpoint is <aggregatorUrl>/internal/metering/batches", async () => {
  const urls: string[] = [];
  const stub = aggregator();
  const { batcher } = await setup({
    url: "https://agg.example.test/base//",
    batchSize: 1,
    fetch: (req) => {
      urls.push(req.url);
      return stub.handler(new Request(`http://x${PATH}`, req));
    },
  });
  try {
    batcher.add(usageEvent());
    await batcher.drain();
    assert.deepEqual(urls, [`https://agg.example.test/base${PATH}`]);
  } finally {
    await batcher.close(1_000);
  }
});

Deno.test("batcher: a 400 answer is not retried, counted as rejected and logged", async () => {
  const stub = aggregator([400]);
  await withServedStub(stub, async (url) => {
    const { batcher, spool, metrics, logs } = await setup({ url, batchSize: 2 });
    try {
      batcher.add(usageEvent());
      batcher.add(usageEvent());
      await batcher.drain();
      assert.equal(stub.attempts.length, 1, "no retry");
      assert.equal(stub.delivered.length, 0);
      assert.deepEqual(spool.size, { batches: 0, events: 0 }, "retrying cannot help: dropped");
      assert.equal(await batches(metrics, "rejected"), 1);
      assert.equal(await batches(metrics, "retry"), 0);
      assert.equal(await batches(metrics, "acked"), 0);
      const line = logs.find("error", "malformed batch");
      assert.equal(line.length, 1);
      assert.equal(line[0].batch_id, stub.attempts[0].batch_id);
      assert.match(String(line[0].reason), /events missing/);
    } finally {
      await batcher.close(1_000);
    }
  });
});

Deno.test("batcher: an ack with rejected events counts them and logs an error", async () => {
  const stub = aggregator(["reject-one"]);
  await withServedStub(stub, async (url) => {
    const { batcher, spool, metrics, logs } = await setup({ url, batchSize: 2 });
    try {
      batcher.add(usageEvent());
      batcher.add(usageEvent());
      await batcher.drain();
      assert.equal(stub.attempts.length, 1);
      assert.deepEqual(spool.size, { batches: 0, events: 0 });
      assert.equal(await batches(metrics, "acked"), 1);
      assert.equal(await metricValue(metrics, "convergio_metering_events_rejected_total"), 1);
      const line = logs.find("error", "rejected events");
      assert.equal(line.length, 1);
      assert.deepEqual(line[0].rejected, [{ position: 0, reason: "user_id: Required" }]);
    } finally {
      await batcher.close(1_000);
    }
  });
});

Deno.test("batcher: an unreachable aggregator is retried until it comes up on its port", async () => {
  const port = closedPort();
  const stub = aggregator();
  const { batcher, spool, metrics, logs } = await setup({
    url: `http://127.0.0.1:${port}`,
    batchSize: 2,
  });
  let server: Deno.HttpServer | undefined;
  try {
    const events = [usageEvent(), usageEvent()];
    for (const e of events) batcher.add(e);
    await waitFor(async () => (await batches(metrics, "retry")) >= 2, "failed attempts");
    assert.equal(spool.size.batches, 1, "kept while undelivered");
    assert.ok(logs.find("warn", "unreachable").length >= 2);
    server = serve(stub, port);
    await waitFor(() => stub.delivered.length === 1, "delivery once the aggregator is up");
    await waitFor(() => spool.size.batches === 0, "the ack");
    assert.deepEqual(stub.delivered[0].events, events);
    assert.equal(await batches(metrics, "acked"), 1);
  } finally {
    await batcher.close(1_000);
    await server?.shutdown();
  }
});

Deno.test("batcher: close(deadline) flushes buffered events and delivers them", async () => {
  const stub = aggregator();
  await withServedStub(stub, async (url) => {
    const { batcher, spool, logs } = await setup({ url, batchSize: 100 });
    const events = [usageEvent(), usageEvent()];
    for (const e of events) batcher.add(e);
    assert.equal(stub.attempts.length, 0);
    await batcher.close(5_000);
    assert.equal(stub.delivered.length, 1);
    assert.deepEqual(stub.delivered[0].events, events);
    assert.deepEqual(spool.size, { batches: 0, events: 0 });
    assert.equal(logs.find("warn", "undelivered").length, 0);
  });
});

Deno.test("batcher: close with the aggregator down gives up at the deadline; the journal replays it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cvg-batcher-" });
  const file = `${dir}/spool.jsonl`;
  try {
    let calls = 0;
    const { batcher, spool, logs } = await setup({
      url: "http://aggregator.invalid",
      batchSize: 100,
      file,
      fetch: () => {
        calls++;
        return Promise.reject(new TypeError("connection refused"));
      },
    });
    const events = [usageEvent(), usageEvent(), usageEvent()];
    for (const e of events) batcher.add(e);
    await batcher.close(50);
    assert.ok(calls >= 1, "it tried");
    assert.deepEqual(spool.size, { batches: 1, events: 3 });
    const warn = logs.find("warn", "shutting down with undelivered batches");
    assert.equal(warn.length, 1);
    assert.equal(warn[0].batches, 1);
    assert.equal(warn[0].events, 3);

    const metrics = createMetrics();
    const replay = await Spool.open({
      maxEvents: 100,
      file,
      log: capturedLog().log,
      metrics,
      now: Date.now,
    });
    assert.deepEqual(replay.size, { batches: 1, events: 3 });
    assert.deepEqual(replay.peek()?.events, events);

    // And the next edge delivers it.
    const stub = aggregator();
    const next = createBatcher({
      aggregatorUrl: "http://aggregator.invalid",
      secret: SECRET,
      edgeId: "edge-1",
      batchSize: 100,
      flushIntervalMs: 60_000,
      retryBaseMs: 5,
      retryMaxMs: 20,
      spool: replay,
      clock: { now: Date.now },
      log: capturedLog().log,
      metrics,
      fetch: stub.handler,
    });
    await next.close(1_000);
    assert.equal(stub.delivered.length, 1);
    assert.deepEqual(stub.delivered[0].events, events);
    assert.deepEqual(replay.size, { batches: 0, events: 0 });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("batcher: close with a hanging aggregator aborts the request at the deadline", async () => {
  let aborted = false;
  const { batcher, spool } = await setup({
    url: "http://aggregator.invalid",
    batchSize: 1,
    fetch: (req) =>
      new Promise((_, reject) => {
        req.signal.addEventListener("abort", () => {
          aborted = true;
          reject(req.signal.reason);
        });
      }),
  });
  batcher.add(usageEvent());
  await batcher.close(30);
  assert.equal(aborted, true);
  assert.deepEqual(spool.size, { batches: 1, events: 1 });
});
