import assert from "node:assert/strict";
import { run } from "../../scripts/bench/gateway_bench.ts";

/** The cells of the report's row for a target in the table whose header starts with `head`. */
function rowOf(report: string, head: string, target: string): string[] {
  const lines = report.split("\n");
  const start = lines.findIndex((l) => l.startsWith(`| ${head}`));
  assert.ok(start >= 0, `no table "${head}" in:\n${report}`);
  const row = lines.slice(start + 2).find((l) => l.split("|")[1]?.trim() === target);
  assert.ok(row, `no row for ${target} in:\n${report}`);
  return row.split("|").slice(1, -1).map((c) => c.trim());
}

Deno.test("the side-by-side benchmark measures direct, floor and the gateway with everything on", async () => {
  const report = await run(["--quick", "--no-peer"]);

  for (const target of ["direct", "floor", "ours"]) {
    const [, rps, p50, p99] = rowOf(report, "target | RPS", target);
    assert.ok(Number(rps) > 0, `${target} RPS: ${rps}`);
    assert.ok(Number.isFinite(Number(p50)) && Number.isFinite(Number(p99)), target);
    const [, , , errors, , sse] = rowOf(report, "target | 1 conn", target);
    assert.match(errors, /^\d+ \/ \d+$/, `${target}: failed requests are counted`);
    assert.match(sse, /^(\d+)\/\1$/, `${target}: every SSE request completed`);
  }
  assert.match(rowOf(report, "target | RPS", "peer")[1], /skipped \(--no-peer\)/);

  // Ours recording every trace: its own edge, the wrk runs only, its CPU counted like ours.
  const everyTrace = "ours, every trace";
  assert.ok(Number(rowOf(report, "target | RPS", everyTrace)[1]) > 0, `${everyTrace} RPS`);
  const [, , , , cpu, sse] = rowOf(report, "target | 1 conn", everyTrace);
  assert.match(cpu, /^edge \d+\.\d+, aggregator \d+\.\d+, bridge \d+\.\d+$/);
  assert.equal(sse, "n/a", "no streaming for the every-trace edge");
  assert.match(report, /throughput ours\/every-trace: \*\*\d+\.\d+\*\*/);

  // Ours served the load itself, over HTTP and /v1/ws, and metered it end to end.
  assert.ok(Number(rowOf(report, "target | RPS", "ours")[7]) > 0, "a WS first-token time");
  assert.match(report, /WS first token .* \((\d+)\/\1 ok\)/);
  const served = Number(
    /requests served \(`convergio_http_requests_total`\): (\d+)/.exec(
      report,
    )?.[1],
  );
  const metered = Number(
    /usage events metered into the aggregator's Postgres: (\d+)/.exec(
      report,
    )?.[1],
  );
  assert.ok(served > 100, `edge served ${served}`);
  assert.ok(metered > 100, `aggregator rows ${metered}`);
  assert.ok(Number(/budget keys in Redis .*: (\d+)/.exec(report)?.[1]) > 0, "budgets in Redis");
  assert.match(report, /\/v1\/traces \d+/, "spans reached the OTLP sink");
});
