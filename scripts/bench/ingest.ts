/**
 * Ingest benchmark: sustained usage events per second into real Postgres
 * through the aggregator's signed HTTP endpoint. The aggregator runs in its
 * own process (ROLE=aggregator) on a fresh database, which is dropped after.
 *   deno task bench:ingest [--seconds 10] [--batch 1000] [--concurrency 4]
 *     [--pg postgres://postgres@127.0.0.1:5432/postgres]
 */
import { parseArgs } from "node:util";
import postgres from "postgres";
import { signBody } from "../../src/metering/signature.ts";
import { percentiles, spawnGateway } from "./support.ts";

function event(i: number, run: string, now: string) {
  return {
    request_id: `${run}-${i}`,
    tenant_id: `tenant-${i % 50}`,
    user_id: `user-${i % 500}`,
    session_id: null,
    provider: "demo",
    model: i % 3 ? "convergio-demo" : "convergio-demo-mini",
    input_tokens: 120,
    output_tokens: 380,
    tool_calls_count: i % 7 === 0 ? 1 : 0,
    audio_seconds_in: 0,
    audio_seconds_out: 0,
    latency_ms: 420,
    success: i % 50 !== 0,
    error_code: i % 50 !== 0 ? null : "provider.timeout",
    mode: i % 2 ? "managed" : "byok",
    lane: i % 2 ? "managed" : "byok",
    cost_usd: 0.00412,
    occurred_at: now,
  };
}

export async function run(args: string[]): Promise<string> {
  const { values } = parseArgs({
    args,
    options: {
      seconds: { type: "string", default: "10" },
      batch: { type: "string", default: "1000" },
      concurrency: { type: "string", default: "4" },
      pg: { type: "string", default: "postgres://postgres@127.0.0.1:5432/postgres" },
    },
  });
  const seconds = Number(values.seconds);
  const size = Number(values.batch);
  const concurrency = Number(values.concurrency);
  const dbName = `cvg_bench_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const admin = postgres(values.pg!, { max: 1, onnotice: () => {} });
  await admin.unsafe(`CREATE DATABASE ${dbName}`);
  const dataDir = await Deno.makeTempDir();
  const secret = crypto.randomUUID();
  const agg = await spawnGateway({
    ROLE: "aggregator",
    DATABASE_URL: values.pg!.replace(/\/[^/]*$/, `/${dbName}`),
    METERING_SECRET: secret,
    DATA_DIR: dataDir,
  });
  try {
    const endpoint = `${agg.url}/internal/metering/batches`;
    const runId = crypto.randomUUID().slice(0, 8);
    const now = new Date().toISOString();
    let next = 0;
    let accepted = 0;
    const latencies: number[] = [];
    const post = async () => {
      const first = next;
      next += size;
      const body = JSON.stringify({
        batch_id: `${runId}-${first}`,
        events: Array.from({ length: size }, (_, k) => event(first + k, runId, now)),
      });
      const t0 = performance.now();
      const res = await fetch(endpoint, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "x-convergio-signature": await signBody(secret, body, Date.now()),
        },
        body,
      });
      const out = await res.json();
      if (!res.ok) throw new Error(`aggregator answered ${res.status}: ${JSON.stringify(out)}`);
      latencies.push(performance.now() - t0);
      accepted += out.accepted;
    };
    // Warm-up: connections, prepared statements, JIT.
    for (let i = 0; i < 3; i++) await post();
    accepted = 0;
    latencies.length = 0;
    const started = performance.now();
    const deadline = started + seconds * 1000;
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) await post();
    }));
    const elapsed = (performance.now() - started) / 1000;
    const db = postgres(values.pg!.replace(/\/[^/]*$/, `/${dbName}`), {
      max: 1,
      onnotice: () => {},
    });
    const [{ rows }] = await db`SELECT count(*)::int AS rows FROM usage_events`;
    await db.end();
    const p = percentiles(latencies);
    return [
      `ingest into real Postgres through the aggregator (own process), ${seconds} s,`,
      `batches of ${size} events, ${concurrency} concurrent senders`,
      `| events/s | batches/s | batch p50 ms | batch p99 ms | rows in ledger |`,
      `|---|---|---|---|---|`,
      `| ${Math.round(accepted / elapsed)} | ${(latencies.length / elapsed).toFixed(1)} | ${
        p.p50.toFixed(1)
      } | ${p.p99.toFixed(1)} | ${rows} |`,
    ].join("\n");
  } finally {
    await agg.stop();
    await admin.unsafe(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    await admin.end();
    await Deno.remove(dataDir, { recursive: true });
  }
}

if (import.meta.main) console.log(await run(Deno.args));
