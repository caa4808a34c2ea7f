import assert from "node:assert/strict";
import { Spool, type SpooledBatch } from "../../src/metering/spool.ts";
import { capturedLog, createMetrics, type Metrics, metricValue, usageEvent } from "./_helpers.ts";

function batch(id: string, n: number, created_at = 1_000): SpooledBatch {
  return {
    batch_id: id,
    created_at,
    events: Array.from({ length: n }, () => usageEvent()),
  };
}

interface Harness {
  spool: Spool;
  metrics: Metrics;
  logs: ReturnType<typeof capturedLog>;
  clock: { now: number };
}

async function open(opts: { file?: string; maxEvents?: number; now?: number } = {}) {
  const metrics = createMetrics();
  const logs = capturedLog();
  const clock = { now: opts.now ?? 1_000 };
  const spool = await Spool.open({
    maxEvents: opts.maxEvents ?? 1_000,
    file: opts.file,
    log: logs.log,
    metrics,
    now: () => clock.now,
  });
  return { spool, metrics, logs, clock } satisfies Harness;
}

async function withTempFile(fn: (file: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "cvg-spool-" });
  try {
    await fn(`${dir}/spool.jsonl`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Drains a spool by peek/ack, returning the batch ids in order. */
function drainIds(spool: Spool): string[] {
  const ids: string[] = [];
  for (let b = spool.peek(); b; b = spool.peek()) {
    ids.push(b.batch_id);
    spool.ack(b.batch_id);
  }
  return ids;
}

for (const withFile of [false, true]) {
  const label = withFile ? "with a journal" : "in memory";

  Deno.test(`Spool ${label}: push, peek and ack keep FIFO order and the size`, async () => {
    await withTempFile(async (file) => {
      const { spool } = await open({ file: withFile ? file : undefined });
      assert.equal(spool.peek(), undefined);
      assert.deepEqual(spool.size, { batches: 0, events: 0 });
      const a = batch("a", 2);
      assert.equal(spool.push(a), true);
      assert.equal(spool.push(batch("b", 3)), true);
      assert.equal(spool.push(batch("c", 1)), true);
      assert.deepEqual(spool.size, { batches: 3, events: 6 });
      assert.deepEqual(spool.peek(), a, "the oldest first, events intact");
      assert.equal(spool.peek()?.batch_id, "a", "peek does not remove");
      spool.ack("a");
      assert.equal(spool.peek()?.batch_id, "b");
      assert.deepEqual(spool.size, { batches: 2, events: 4 });
      spool.ack("nope");
      assert.deepEqual(spool.size, { batches: 2, events: 4 }, "an unknown ack is a no-op");
      spool.ack("c"); // out of order
      assert.deepEqual(spool.size, { batches: 1, events: 3 });
      assert.equal(spool.peek()?.batch_id, "b");
      spool.ack("b");
      spool.ack("b");
      assert.equal(spool.peek(), undefined);
      assert.deepEqual(spool.size, { batches: 0, events: 0 });
      if (!withFile) {
        await assert.rejects(Deno.stat(file), Deno.errors.NotFound, "no file without a journal");
      }
    });
  });

  Deno.test(`Spool ${label}: a push past maxEvents is dropped, counted and logged`, async () => {
    await withTempFile(async (file) => {
      const { spool, metrics, logs } = await open({
        file: withFile ? file : undefined,
        maxEvents: 5,
      });
      assert.equal(spool.push(batch("a", 3)), true);
      assert.equal(spool.push(batch("b", 3)), false, "3 + 3 > 5");
      assert.deepEqual(spool.size, { batches: 1, events: 3 });
      assert.equal(
        await metricValue(metrics, "convergio_metering_spool_dropped_events_total"),
        3,
      );
      const full = logs.find("error", "METERING SPOOL FULL");
      assert.equal(full.length, 1);
      assert.equal(full[0].batch_id, "b");
      assert.equal(full[0].dropped_events, 3);
      assert.equal(full[0].bound, 5);
      assert.ok(logs.lines.some((l) => l.includes("METERING SPOOL FULL")));

      assert.equal(spool.push(batch("c", 2)), true, "exactly at the bound fits");
      assert.deepEqual(spool.size, { batches: 2, events: 5 });
      assert.equal(spool.push(batch("d", 1)), false);
      assert.equal(
        await metricValue(metrics, "convergio_metering_spool_dropped_events_total"),
        4,
      );
      assert.equal(logs.find("error", "METERING SPOOL FULL").length, 2);
      assert.deepEqual(drainIds(spool), ["a", "c"], "dropped batches never enter the queue");
      assert.equal(spool.push(batch("e", 5)), true, "room again once acknowledged");

      if (withFile) {
        const reopened = await open({ file, maxEvents: 5 });
        assert.deepEqual(drainIds(reopened.spool), ["e"], "a dropped batch is not journaled");
      }
    });
  });

  Deno.test(`Spool ${label}: depth and oldest-age gauges follow the queue`, async () => {
    await withTempFile(async (file) => {
      const { spool, metrics, clock } = await open({
        file: withFile ? file : undefined,
        now: 10_000,
      });
      const gauge = (name: string) => metricValue(metrics, `convergio_metering_spool_${name}`);
      assert.equal(await gauge("events"), 0);
      assert.equal(await gauge("batches"), 0);
      assert.equal(await gauge("oldest_age_seconds"), 0);

      spool.push(batch("a", 2, 4_000));
      assert.equal(await gauge("events"), 2);
      assert.equal(await gauge("batches"), 1);
      assert.equal(await gauge("oldest_age_seconds"), 6);

      clock.now = 12_500;
      spool.push(batch("b", 3, 12_000));
      assert.equal(await gauge("events"), 5);
      assert.equal(await gauge("batches"), 2);
      assert.equal(await gauge("oldest_age_seconds"), 8.5, "the age of the oldest batch");

      clock.now = 20_000;
      assert.equal(await gauge("oldest_age_seconds"), 8.5, "unchanged until observed");
      spool.observe();
      assert.equal(await gauge("oldest_age_seconds"), 16);

      spool.ack("a");
      assert.equal(await gauge("events"), 3);
      assert.equal(await gauge("batches"), 1);
      assert.equal(await gauge("oldest_age_seconds"), 8, "now b is the oldest");

      spool.ack("b");
      assert.equal(await gauge("events"), 0);
      assert.equal(await gauge("batches"), 0);
      assert.equal(await gauge("oldest_age_seconds"), 0);
    });
  });
}

Deno.test("Spool journal: unacknowledged batches are replayed after reopening, acked ones not", async () => {
  await withTempFile(async (file) => {
    const first = await open({ file });
    const a = batch("a", 2);
    const c = batch("c", 3);
    first.spool.push(a);
    first.spool.push(batch("b", 1));
    first.spool.push(c);
    first.spool.push(batch("d", 1));
    first.spool.ack("b");
    first.spool.ack("d");

    const second = await open({ file, now: 5_000 });
    assert.deepEqual(second.spool.size, { batches: 2, events: 5 });
    assert.deepEqual(second.spool.peek(), a, "order and content survive");
    const replayed = second.logs.find("info", "metering spool replayed");
    assert.equal(replayed.length, 1);
    assert.equal(replayed[0].batches, 2);
    assert.equal(replayed[0].events, 5);
    assert.equal(await metricValue(second.metrics, "convergio_metering_spool_events"), 5);
    assert.equal(await metricValue(second.metrics, "convergio_metering_spool_batches"), 2);
    assert.equal(
      await metricValue(second.metrics, "convergio_metering_spool_oldest_age_seconds"),
      4,
      "the replayed batch keeps its created_at",
    );

    second.spool.ack("a");
    const third = await open({ file });
    assert.deepEqual(third.spool.peek(), c);
    assert.deepEqual(drainIds(third.spool), ["c"]);

    const fourth = await open({ file });
    assert.deepEqual(fourth.spool.size, { batches: 0, events: 0 });
    assert.equal(fourth.logs.find("info", "replayed").length, 0, "nothing to replay, no line");
  });
});

Deno.test("Spool journal: a missing file opens empty", async () => {
  await withTempFile(async (file) => {
    const { spool, logs } = await open({ file });
    assert.deepEqual(spool.size, { batches: 0, events: 0 });
    assert.equal(logs.lines.length, 0);
  });
});

Deno.test("Spool journal: a torn last line is skipped with a warning, the rest replays", async () => {
  await withTempFile(async (file) => {
    const first = await open({ file });
    first.spool.push(batch("a", 1));
    const b = batch("b", 2);
    first.spool.push(b);
    first.spool.ack("a");
    const torn = JSON.stringify({ op: "add", batch: batch("c", 4) }) + "\n";
    await Deno.writeTextFile(file, torn.slice(0, Math.floor(torn.length / 2)), { append: true });

    const second = await open({ file });
    assert.deepEqual(second.spool.size, { batches: 1, events: 2 });
    assert.deepEqual(second.spool.peek(), b);
    assert.equal(second.logs.find("warn", "torn").length, 1);
  });
});

Deno.test("Spool journal: batches spooled after a torn line survive the next restart", async () => {
  // After a crash mid-write the journal ends without a newline; whatever the
  // restarted edge appends next must not be glued onto the torn fragment.
  await withTempFile(async (file) => {
    const first = await open({ file });
    first.spool.push(batch("a", 1));
    const torn = JSON.stringify({ op: "add", batch: batch("b", 2) }) + "\n";
    await Deno.writeTextFile(file, torn.slice(0, 20), { append: true });

    const second = await open({ file });
    assert.equal(second.spool.peek()?.batch_id, "a");
    assert.deepEqual(second.spool.size, { batches: 1, events: 1 });
    const c = batch("c", 3);
    assert.equal(second.spool.push(c), true);
    second.spool.ack("a");

    const third = await open({ file });
    assert.deepEqual(
      third.spool.size,
      { batches: 1, events: 3 },
      "batch c, spooled after the torn line, must be replayed (and a not)",
    );
    assert.deepEqual(third.spool.peek(), c);
  });
});

Deno.test("Spool journal: compacted once empty and large, and still correct afterwards", async () => {
  await withTempFile(async (file) => {
    const { spool } = await open({ file, maxEvents: 100_000 });
    const big = "x".repeat(2_000);
    // About 9.6 MB of journal: past the 8 MiB compaction threshold.
    for (let i = 0; i < 40; i++) {
      spool.push({
        batch_id: `big-${i}`,
        created_at: 1_000,
        events: Array.from({ length: 100 }, () => usageEvent({ user_id: big })),
      });
    }
    assert.ok((await Deno.stat(file)).size > 8 * 1024 * 1024);
    for (let i = 0; i < 39; i++) spool.ack(`big-${i}`);
    assert.ok((await Deno.stat(file)).size > 8 * 1024 * 1024, "not compacted while non-empty");
    spool.ack("big-39");
    assert.equal((await Deno.stat(file)).size, 0, "truncated once empty");

    const after = batch("after", 2);
    spool.push(after);
    const reopened = await open({ file });
    assert.deepEqual(reopened.spool.size, { batches: 1, events: 2 });
    assert.deepEqual(reopened.spool.peek(), after);
  });
});
