import assert from "node:assert/strict";
import { run } from "../../scripts/bench/added_latency.ts";
import { percentiles } from "../../scripts/bench/support.ts";
import { run as runBudget } from "../../scripts/bench/budget.ts";
import { run as runIngest } from "../../scripts/bench/ingest.ts";
import { run as runObservability } from "../../scripts/bench/observability.ts";
import { run as runSoak, slope } from "../../scripts/bench/soak.ts";
import { run as runWs } from "../../scripts/bench/ws.ts";

Deno.test("percentiles pick from the sorted samples", () => {
  const p = percentiles([5, 1, 4, 2, 3]);
  assert.equal(p.p50, 3);
  assert.equal(p.p99, 5);
  assert.equal(p.mean, 3);
});

Deno.test("the added-latency benchmark runs end to end and prints its table", async () => {
  const out = await run(["--requests", "5", "--warmup", "1"]);
  const rows = out.split("\n").filter((l) => l.startsWith("| "));
  assert.deepEqual(rows.map((r) => r.split("|")[1].trim()), [
    "target",
    "direct to mock",
    "through gateway",
    "added",
  ]);
  for (const row of rows.slice(1)) {
    const cells = row.split("|").slice(2, 5).map((c) => Number(c.trim()));
    assert.ok(cells.every((c) => Number.isFinite(c)), row);
  }
});

Deno.test("the budget benchmark runs on the real Redis and admits in one round trip", async () => {
  const out = await runBudget(["--requests", "5", "--warmup", "1"]);
  assert.match(
    out,
    /redis round trips per admitted request \(hot path, before the provider\): 1$/m,
  );
  const settle = Number(
    /per settlement \(after the response, off the hot path, coalesced\): ([\d.]+)/.exec(out)?.[1],
  );
  assert.ok(settle > 0 && settle <= 1, `settlements take at most one round trip each (${settle})`);
  const rows = out.split("\n").filter((l) => l.startsWith("| ") && !l.startsWith("| guard"));
  assert.deepEqual(rows.map((r) => r.split("|")[1].trim()), [
    "none (router only)",
    "memory store",
    "redis store (REST bridge)",
    "redis store + local admission",
  ]);
  const [before, after] =
    /before the provider per request: ([\d.]+), after the response \(charges, coalesced\): ([\d.]+)/
      .exec(out)!.slice(1).map(Number);
  assert.ok(before < 0.1, `local admission skips the store before the provider (${before})`);
  assert.ok(after > 0 && after <= 1, `one charge per request at most (${after})`);
});

Deno.test("the ingest benchmark drives a real aggregator process into real Postgres", async () => {
  const out = await runIngest(["--seconds", "1", "--batch", "50", "--concurrency", "2"]);
  const row = out.split("\n").filter((l) => /^\| \d/.test(l))[0];
  const [eventsPerSecond, , , , rows] = row.split("|").slice(1, 6).map((c) => Number(c.trim()));
  assert.ok(eventsPerSecond > 0, out);
  assert.ok(rows >= 150 && rows % 50 === 0, "whole batches, warm-up included, all landed");
});

Deno.test("the observability benchmark compares real gateway processes with it on and off", async () => {
  const out = await runObservability(["--seconds", "1", "--connections", "2"]);
  const rows = out.split("\n").filter((l) => /^\| (on|off|metrics only) /.test(l));
  assert.equal(rows.length, 3, out);
  for (const row of rows) {
    const [rps, , , errors] = row.split("|").slice(2, 6).map((c) => Number(c.trim()));
    assert.ok(rps > 0, row);
    assert.equal(errors, 0, row);
  }
  const exports = Number(/OTLP trace exports received: (\d+)/.exec(out)?.[1]);
  assert.ok(exports > 0, "with it on, spans reached the OTLP sink");
});

Deno.test("the WebSocket load check runs chat and voice sessions against a real gateway process", async () => {
  const out = await runWs(["--sessions", "20", "--voice", "3", "--voice-seconds", "1"]);
  const chat = out.split("\n").find((l) => l.startsWith("| 20 |"));
  assert.ok(chat, out);
  assert.equal(chat.split("|")[7].trim(), "0", "no chat errors");
  const voice = out.split("\n").find((l) => l.startsWith("| 3 |"));
  assert.ok(voice, out);
  const cells = voice.split("|").map((c) => c.trim());
  assert.equal(cells[5], "3", "every voice session completed");
  assert.equal(cells[6], "0", "no dropouts");
});

Deno.test("slope is the least-squares growth per unit of x", () => {
  assert.equal(slope([[0, 1], [1, 3], [2, 5]]), 2);
  assert.equal(slope([[0, 4], [1, 4], [2, 4]]), 0);
  assert.equal(slope([[1, 7], [1, 9]]), 0);
});

Deno.test("the soak benchmark samples a real gateway's memory slice by slice", async () => {
  const out = await runSoak(["--minutes", "0.05", "--slice", "2", "--connections", "4"]);
  const rows = out.split("\n").filter((l) => /^\| \d/.test(l));
  assert.equal(rows.length, 2, out);
  for (const row of rows) {
    const [, requests, rss, used, reserved] = row.split("|").slice(1, 6).map((c) => Number(c));
    assert.ok(requests > 0 && rss > used && reserved >= used && used > 0, row);
  }
  assert.match(out, /growth after the first slice \(least squares, MiB per minute\): RSS -?[\d.]+/);
});
