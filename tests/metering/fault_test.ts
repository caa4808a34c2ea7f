/**
 * Metering under faults, with real processes: an edge (`ROLE=edge`) and an
 * aggregator (`ROLE=aggregator`) on a fresh real Postgres database. The
 * aggregator is SIGKILLed and restarted, its Postgres connections are cut,
 * a batch is delivered twice, an edge restarts on its journal, an edge
 * journals into a folder that does not exist yet, and a Postgres connection is
 * lost while the driver sets it up. After recovery the ledger holds exactly
 * one row per request sent, and the ids in it are the ids sent.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { signBody } from "../../src/metering/signature.ts";
import type { UsageEvent } from "../../src/metering/usage_event.ts";
import {
  freePort,
  type GatewayProcess,
  spawnGateway,
  tokenMinter,
} from "../support/aggregator_process.ts";
import { freshPostgres, PG_ADMIN_URL } from "../support/db.ts";

const MODEL = "fault-demo";
const METERING_SECRET = "fault-test-metering-secret-0123456789abcdef";
const JWT_SECRET = "fault-test-jwt-secret-0123456789abcdef-0123456789";

function gatewayConfig(metering: Record<string, number> = {}): Record<string, unknown> {
  return {
    providers: { demo: { protocol: "mock" } },
    models: {
      [MODEL]: {
        deployments: [{ provider: "demo", model: "demo-large" }],
        price: { input_per_1m: 1, output_per_1m: 10 },
      },
    },
    // The tests are about metering: no limit or budget may refuse a request.
    tenant_defaults: {
      rpm: 1_000_000,
      tpm: 1_000_000_000,
      daily_budget_usd: 100_000,
      monthly_budget_usd: 1_000_000,
    },
    guardrails: { global_daily_cap_usd: 0 },
    metering: {
      batch_size: 10,
      flush_interval_ms: 100,
      retry_base_ms: 50,
      retry_max_ms: 500,
      shutdown_flush_ms: 30_000,
      reconcile_interval_ms: 3_600_000,
      ...metering,
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` every `stepMs` until it holds or `timeoutMs` passes; returns whether it held. */
async function waitFor(
  cond: () => boolean | Promise<boolean>,
  timeoutMs: number,
  stepMs = 50,
): Promise<boolean> {
  const rounds = Math.ceil(timeoutMs / stepMs);
  for (let i = 0; i < rounds; i++) {
    if (await cond()) return true;
    await sleep(stepMs);
  }
  return await cond();
}

/** Everything a fault test owns, torn down in `finally` whatever happened. */
class Fixture {
  readonly processes: GatewayProcess[] = [];
  dir = "";
  db?: { url: string; drop(): Promise<void> };
  configFile = "";
  aggregatorPort = 0;

  static async create(metering: Record<string, number> = {}): Promise<Fixture> {
    const f = new Fixture();
    f.dir = await Deno.makeTempDir({ prefix: "cvg-fault-" });
    f.configFile = `${f.dir}/gateway.json`;
    await Deno.writeTextFile(f.configFile, JSON.stringify(gatewayConfig(metering)));
    f.aggregatorPort = freePort();
    return f;
  }

  get aggregatorUrl(): string {
    return `http://127.0.0.1:${this.aggregatorPort}`;
  }

  async database(): Promise<string> {
    this.db = await freshPostgres();
    return this.db.url;
  }

  /** The aggregator on the fixture's fixed port, so a restart lands where edges look. */
  async startAggregator(): Promise<GatewayProcess> {
    assert.ok(this.db, "create the database first");
    const p = await spawnGateway({
      ROLE: "aggregator",
      PORT: String(this.aggregatorPort),
      GATEWAY_CONFIG: this.configFile,
      DATA_DIR: `${this.dir}/aggregator`,
      DATABASE_URL: this.db.url,
      METERING_SECRET,
      JWT_SECRET,
    });
    this.processes.push(p);
    return p;
  }

  /**
   * An edge whose journal lives in `dataDir`. The folder is created first, as a
   * mounted volume would be: an edge on a folder that does not exist yet
   * crashes at its first batch (see the last test of this file).
   */
  async startEdge(
    dataDir = `${this.dir}/edge`,
    opts: { createDataDir?: boolean } = {},
  ): Promise<GatewayProcess> {
    if (opts.createDataDir ?? true) await Deno.mkdir(dataDir, { recursive: true });
    const p = await spawnGateway({
      ROLE: "edge",
      PORT: "0",
      GATEWAY_CONFIG: this.configFile,
      DATA_DIR: dataDir,
      AGGREGATOR_URL: this.aggregatorUrl,
      METERING_SECRET,
      METERING_SPOOL_FILE: "true",
      JWT_SECRET,
    });
    this.processes.push(p);
    return p;
  }

  async close(): Promise<void> {
    for (const p of this.processes) p.kill("SIGKILL");
    await Promise.allSettled(this.processes.map((p) => p.exited));
    if (this.db) await this.db.drop();
    if (this.dir) await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

interface LedgerCounts {
  rows: number;
  distinct: number;
  rollupTenant: number;
  rollupModel: number;
  ids: Set<string>;
}

async function readLedger(url: string): Promise<LedgerCounts> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const [c] = await sql<{ rows: number; distinct: number }[]>`
      SELECT count(*)::int AS rows, count(DISTINCT request_id)::int AS distinct
      FROM usage_events`;
    const [t] = await sql<{ n: number }[]>`
      SELECT coalesce(sum(requests), 0)::int AS n FROM usage_daily_tenant`;
    const [m] = await sql<{ n: number }[]>`
      SELECT coalesce(sum(requests), 0)::int AS n FROM usage_daily_model`;
    const ids = await sql<{ request_id: string }[]>`SELECT request_id FROM usage_events`;
    return {
      rows: c.rows,
      distinct: c.distinct,
      rollupTenant: t.n,
      rollupModel: m.n,
      ids: new Set(ids.map((r) => r.request_id)),
    };
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** Polls the ledger until it holds `n` rows (or the bound passes); returns the last reading. */
async function ledgerAt(url: string, n: number, timeoutMs: number): Promise<LedgerCounts> {
  let last = await readLedger(url);
  await waitFor(async () => (last = await readLedger(url)).rows >= n, timeoutMs, 200);
  return last;
}

function assertExactlyOnce(label: string, ledger: LedgerCounts, sent: string[]) {
  console.log(
    `${label}: sent ${sent.length}, ledger rows ${ledger.rows}, distinct request_id ${ledger.distinct}, ` +
      `usage_daily_tenant.requests ${ledger.rollupTenant}, usage_daily_model.requests ${ledger.rollupModel}`,
  );
  assert.equal(ledger.rows, sent.length, `${label}: one ledger row per request`);
  assert.equal(ledger.distinct, sent.length, `${label}: no request counted twice`);
  assert.equal(
    ledger.rollupTenant,
    sent.length,
    `${label}: tenant rollup counts every request once`,
  );
  assert.equal(ledger.rollupModel, sent.length, `${label}: model rollup counts every request once`);
  const missing = sent.filter((id) => !ledger.ids.has(id));
  const sentSet = new Set(sent);
  const extra = [...ledger.ids].filter((id) => !sentSet.has(id));
  assert.deepEqual(missing, [], `${label}: every id sent is in the ledger`);
  assert.deepEqual(extra, [], `${label}: the ledger holds only ids sent`);
}

interface Traffic {
  done: number;
  statuses: Map<number, number>;
}

/**
 * Sends one chat request per id to the edge, `concurrency` at a time. A
 * request whose index is at or past a gate's `from` waits for the gate, so
 * faults land while the stream is still flowing.
 */
async function send(
  edgeUrl: string,
  tokens: { managed: string; byok: string },
  ids: string[],
  concurrency: number,
  traffic: Traffic,
  gates: Array<{ from: number; open: Promise<unknown> }> = [],
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < ids.length) {
      const i = next++;
      for (const g of gates) if (i >= g.from) await g.open;
      // Both lanes: even requests are billed to the house, odd ones to the tenant's key.
      const token = i % 2 === 0 ? tokens.managed : tokens.byok;
      const res = await fetch(`${edgeUrl}/v1/chat`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${token}`,
          "content-type": "application/json",
          "x-request-id": ids[i],
        },
        body: JSON.stringify({ model_hint: MODEL, prompt: `hello ${i}`, max_tokens: 16 }),
      });
      await res.body?.cancel();
      assert.equal(res.headers.get("x-request-id"), ids[i], "the edge keeps the request id sent");
      traffic.statuses.set(res.status, (traffic.statuses.get(res.status) ?? 0) + 1);
      traffic.done++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

function newTraffic(): Traffic {
  return { done: 0, statuses: new Map() };
}

async function tokensFor(tenant: string) {
  const mint = tokenMinter(gatewayConfig(), JWT_SECRET);
  return {
    managed: await mint({ tenant, user: "alice", mode: "managed" }),
    byok: await mint({ tenant, user: "bob", mode: "byok" }),
  };
}

function idsFor(prefix: string, n: number): string[] {
  const run = crypto.randomUUID().slice(0, 8);
  return Array.from({ length: n }, (_, i) => `${prefix}-${run}-${String(i).padStart(4, "0")}`);
}

/** Log lines of a process whose `msg` is `msg`. */
function logLines(p: GatewayProcess, msg: string): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of p.stdout.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      const entry = JSON.parse(line);
      if (entry.msg === msg) out.push(entry);
    } catch { /* a line still being written */ }
  }
  return out;
}

/** Fails unless the process is still up, quoting how it died. */
function assertAlive(p: GatewayProcess, label: string) {
  // deno-lint-ignore no-control-regex
  const stderr = p.stderr.replace(/\x1b\[[0-9;]*m/g, "").slice(0, 1500);
  assert.ok(p.running, `${label}: the process is still up; it died with:\n${stderr}`);
}

const UNREACHABLE = "metering: aggregator unreachable, will retry";
const DELIVERY_FAILED = "metering: delivery failed, will retry";

Deno.test("aggregator SIGKILLed and restarted mid-stream: the ledger holds exactly one row per request", async () => {
  const N = 300;
  const f = await Fixture.create();
  try {
    await f.database();
    let aggregator = await f.startAggregator();
    const edge = await f.startEdge();
    const tokens = await tokensFor("fault-kill");
    const ids = idsFor("kill", N);
    const traffic = newTraffic();

    const killed = Promise.withResolvers<void>();
    const restarted = Promise.withResolvers<void>();
    const controller = (async () => {
      assert.ok(await waitFor(() => traffic.done >= N / 3, 60_000), "traffic reaches a third");
      aggregator.kill("SIGKILL");
      const status = await aggregator.exited;
      assert.equal(status.signal, "SIGKILL");
      killed.resolve();
      // Keep sending while it is down, until the edge has felt the outage.
      assert.ok(
        await waitFor(() => logLines(edge, UNREACHABLE).length > 0, 30_000),
        "the edge notices the aggregator is gone",
      );
      assert.ok(await waitFor(() => traffic.done >= (2 * N) / 3, 60_000), "traffic reaches 2/3");
      aggregator = await f.startAggregator();
      restarted.resolve();
    })().catch((err) => {
      killed.reject(err);
      restarted.reject(err);
      throw err;
    });

    await Promise.all([
      send(edge.url, tokens, ids, 8, traffic, [
        { from: N / 2, open: killed.promise },
        { from: (5 * N) / 6, open: restarted.promise },
      ]),
      controller,
    ]);
    assert.deepEqual([...traffic.statuses], [[200, N]], "every request is served");

    const recovered = await ledgerAt(f.db!.url, N, 30_000);
    console.log(
      `kill/restart: ${logLines(edge, UNREACHABLE).length} unreachable retries seen by the edge; ` +
        `ledger rows before edge shutdown ${recovered.rows}`,
    );
    const edgeStatus = await edge.stop();
    assert.equal(edgeStatus.code, 0, "the edge shuts down cleanly");
    assertExactlyOnce("kill/restart", await readLedger(f.db!.url), ids);
    assert.equal(recovered.rows, N, "delivered after recovery, before the edge shut down");
    await aggregator.stop();
  } finally {
    await f.close();
  }
});

Deno.test("Postgres connections of the aggregator cut repeatedly mid-stream: 503s, retries, exactly one row per request", async () => {
  const N = 300;
  const CYCLES = 3;
  const f = await Fixture.create();
  const admin = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
  let dbName = "";
  try {
    const url = await f.database();
    dbName = new URL(url).pathname.slice(1);
    assert.match(dbName, /^cvg_t_[0-9a-f]+$/);
    const aggregator = await f.startAggregator();
    const edge = await f.startEdge();
    const tokens = await tokensFor("fault-pg");
    const ids = idsFor("pg", N);
    const traffic = newTraffic();
    const terminate = async () => {
      const rows = await admin.unsafe(
        `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity
         WHERE datname = '${dbName}' AND pid <> pg_backend_pid()`,
      );
      return rows.filter((r) => r.ok).length;
    };
    const served503 = () => logLines(edge, DELIVERY_FAILED).filter((l) => l.status === 503).length;

    const chunk = N / (2 * CYCLES);
    let terminated = 0;
    for (let c = 0; c < CYCLES; c++) {
      // Connections cut again and again while requests stream; the pool reconnects.
      const a = ids.slice(2 * c * chunk, (2 * c + 1) * chunk);
      let flowing = true;
      const hammer = (async () => {
        // Until the chunk is sent and at least one live backend was cut (bounded).
        let cut = 0;
        for (let k = 0; k < 400 && (flowing || cut === 0); k++) {
          cut += await terminate();
          await sleep(25);
        }
        terminated += cut;
      })();
      await send(edge.url, tokens, a, 8, traffic).finally(() => (flowing = false));
      await hammer;
      assertAlive(aggregator, `cuts ${c + 1}: the aggregator`);

      // A drop the pool cannot ride out: no new connection until it is lifted.
      const before = served503();
      await admin.unsafe(`ALTER DATABASE ${dbName} WITH ALLOW_CONNECTIONS false`);
      try {
        terminated += await terminate();
        const b = ids.slice((2 * c + 1) * chunk, (2 * c + 2) * chunk);
        await send(edge.url, tokens, b, 8, traffic);
        await waitFor(() => served503() > before || !aggregator.running, 30_000);
        assertAlive(aggregator, `drop ${c + 1}: the aggregator`);
        assert.ok(
          served503() > before,
          `drop ${c + 1}: the aggregator answers 503, the edge retries`,
        );
      } finally {
        await admin.unsafe(`ALTER DATABASE ${dbName} WITH ALLOW_CONNECTIONS true`);
      }
    }
    assert.equal(traffic.done, N);
    assert.deepEqual([...traffic.statuses], [[200, N]], "every request is served");

    const recovered = await ledgerAt(url, N, 30_000);
    assertAlive(aggregator, "after the drops: the aggregator");
    console.log(
      `pg drops: ${terminated} backends terminated, ${served503()} 503 answers retried by the edge; ` +
        `ledger rows before edge shutdown ${recovered.rows}`,
    );
    assert.ok(terminated >= CYCLES, "backends were actually terminated");
    const edgeStatus = await edge.stop();
    assert.equal(edgeStatus.code, 0, "the edge shuts down cleanly");
    assertExactlyOnce("pg drops", await readLedger(url), ids);
    assert.equal(recovered.rows, N, "delivered after recovery, before the edge shut down");
    await aggregator.stop();
  } finally {
    if (dbName) {
      await admin.unsafe(`ALTER DATABASE ${dbName} WITH ALLOW_CONNECTIONS true`).catch(() => {});
    }
    await admin.end({ timeout: 5 });
    await f.close();
  }
});

function usageEvent(requestId: string, tenant: string): UsageEvent {
  return {
    request_id: requestId,
    tenant_id: tenant,
    user_id: "alice",
    session_id: null,
    provider: "demo",
    model: MODEL,
    input_tokens: 12,
    output_tokens: 34,
    tool_calls_count: 0,
    audio_seconds_in: 0,
    audio_seconds_out: 0,
    latency_ms: 5,
    success: true,
    error_code: null,
    mode: "managed",
    lane: "managed",
    cost_usd: 0.000352,
    occurred_at: new Date().toISOString(),
  };
}

async function postBatch(
  aggregatorUrl: string,
  batch: { batch_id: string; edge_id: string; events: UsageEvent[] },
) {
  const body = JSON.stringify(batch);
  const res = await fetch(`${aggregatorUrl}/internal/metering/batches`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "x-convergio-signature": await signBody(METERING_SECRET, body, Date.now()),
    },
    body,
  });
  return { status: res.status, body: await res.json() };
}

Deno.test("the same batch delivered twice: the second answer is all duplicates and the ledger is unchanged", async () => {
  const SIZE = 25;
  const f = await Fixture.create();
  try {
    const url = await f.database();
    const aggregator = await f.startAggregator();
    const ids = idsFor("dup", SIZE + 5);
    const first = ids.slice(0, SIZE);
    const batch = {
      batch_id: crypto.randomUUID(),
      edge_id: "fault-test-edge",
      events: first.map((id) => usageEvent(id, "fault-dup")),
    };

    const one = await postBatch(aggregator.url, batch);
    assert.equal(one.status, 200, JSON.stringify(one.body));
    assert.deepEqual(one.body, {
      batch_id: batch.batch_id,
      accepted: SIZE,
      duplicates: 0,
      rejected: [],
    });
    const afterOne = await readLedger(url);

    const two = await postBatch(aggregator.url, batch);
    assert.equal(two.status, 200, JSON.stringify(two.body));
    assert.deepEqual(two.body, {
      batch_id: batch.batch_id,
      accepted: 0,
      duplicates: SIZE,
      rejected: [],
    });
    const afterTwo = await readLedger(url);
    console.log(
      `duplicate batch: first ${JSON.stringify(one.body)}, second ${JSON.stringify(two.body)}, ` +
        `ledger rows ${afterOne.rows} then ${afterTwo.rows}`,
    );
    assertExactlyOnce("duplicate batch", afterTwo, first);
    assert.deepEqual(afterTwo, afterOne, "the redelivery changes nothing");

    // A batch that overlaps: only its new events count.
    const mixed = {
      batch_id: crypto.randomUUID(),
      edge_id: "fault-test-edge",
      events: ids.slice(SIZE - 5).map((id) => usageEvent(id, "fault-dup")),
    };
    const three = await postBatch(aggregator.url, mixed);
    assert.equal(three.status, 200, JSON.stringify(three.body));
    assert.equal(three.body.accepted, 5);
    assert.equal(three.body.duplicates, 5);
    assertExactlyOnce("overlapping batch", await readLedger(url), ids);
    await aggregator.stop();
  } finally {
    await f.close();
  }
});

/** Batches in a spool journal not yet acknowledged, by replaying its lines. */
async function pendingInJournal(file: string): Promise<UsageEvent[]> {
  const pending = new Map<string, UsageEvent[]>();
  for (const line of (await Deno.readTextFile(file)).split("\n")) {
    if (!line) continue;
    const entry = JSON.parse(line);
    if (entry.op === "add") pending.set(entry.batch.batch_id, entry.batch.events);
    else pending.delete(entry.batch_id);
  }
  return [...pending.values()].flat();
}

Deno.test("edge restarted on its journal while the aggregator was down: replayed and delivered exactly once", async () => {
  const K = 60;
  // A short shutdown flush: the first edge cannot deliver and should not wait long.
  const f = await Fixture.create({ shutdown_flush_ms: 1_000 });
  try {
    const url = await f.database();
    const dataDir = `${f.dir}/edge`;
    const journal = `${dataDir}/metering-spool.jsonl`;
    const tokens = await tokensFor("fault-journal");
    const ids = idsFor("journal", K);

    // Aggregator down: nothing listens on its port.
    const edge1 = await f.startEdge(dataDir);
    const traffic = newTraffic();
    await send(edge1.url, tokens, ids, 6, traffic);
    assert.deepEqual([...traffic.statuses], [[200, K]], "every request is served");
    assert.ok(
      await waitFor(async () => {
        try {
          return (await pendingInJournal(journal)).length === K;
        } catch {
          return false;
        }
      }, 15_000),
      "every event reaches the journal",
    );
    const status1 = await edge1.stop();
    assert.equal(status1.code, 0, "the first edge shuts down cleanly");
    assert.ok(logLines(edge1, UNREACHABLE).length > 0, "the first edge could not deliver");
    const journaled = (await pendingInJournal(journal)).map((e) => e.request_id);
    console.log(`journal: ${journaled.length} events left undelivered by the first edge`);
    assert.deepEqual(journaled.sort(), [...ids].sort(), "the journal holds every request");

    const aggregator = await f.startAggregator();
    // Listening means migrated: the ledger exists, and is still empty.
    assert.equal((await readLedger(url)).rows, 0, "nothing reached the ledger yet");
    const edge2 = await f.startEdge(dataDir);
    assert.ok(logLines(edge2, "metering spool replayed").length === 1, "the new edge replays");
    // The new edge is idle: no request arrives to carry the backlog along.
    const whileRunning = await ledgerAt(url, K, 15_000);
    console.log(`journal replay: ledger rows while the new edge idles ${whileRunning.rows}`);
    const status2 = await edge2.stop();
    assert.equal(status2.code, 0, "the new edge shuts down cleanly");
    const final = await readLedger(url);
    assertExactlyOnce("journal replay", final, ids);
    assert.equal((await pendingInJournal(journal)).length, 0, "the journal is fully acknowledged");
    assert.equal(
      whileRunning.rows,
      K,
      "a replayed journal is delivered while the edge runs, without waiting for new traffic or shutdown",
    );
    await aggregator.stop();
  } finally {
    await f.close();
  }
});

Deno.test("edge journaling into a DATA_DIR that does not exist yet meters every request and stays up", async () => {
  const N = 40;
  const f = await Fixture.create();
  try {
    const url = await f.database();
    const aggregator = await f.startAggregator();
    // JWT_SECRET and METERING_SECRET are set, so nothing else creates the folder.
    const dataDir = `${f.dir}/fresh/edge`;
    const edge = await f.startEdge(dataDir, { createDataDir: false });
    const tokens = await tokensFor("fault-fresh-dir");
    const ids = idsFor("fresh", N);
    const traffic = newTraffic();
    let sendError: unknown;
    // Sequential, with a pause past the flush interval, so batches are cut by time too.
    for (const [i, id] of ids.entries()) {
      try {
        await send(edge.url, tokens, [id], 1, traffic);
      } catch (err) {
        sendError = err;
        break;
      }
      if (i % 10 === 9) await sleep(150);
    }
    const status = await edge.stop();
    const ledger = await readLedger(url);
    const crash = /error: Uncaught.*/.exec(edge.stderr)?.[0] ??
      logLines(edge, "unhandled error")[0]?.error;
    console.log(
      `fresh data dir: statuses ${JSON.stringify([...traffic.statuses])}, ` +
        `edge exit code ${status.code}, ledger rows ${ledger.rows}` +
        (crash ? `; edge stderr: ${crash}` : ""),
    );
    assert.equal(sendError, undefined, `the edge kept answering:\n${edge.stderr.slice(0, 2000)}`);
    assert.deepEqual([...traffic.statuses], [[200, N]], "every request is served");
    assert.equal(status.code, 0, `the edge did not crash:\n${edge.stderr.slice(0, 2000)}`);
    assertExactlyOnce("fresh data dir", ledger, ids);
    await aggregator.stop();
  } finally {
    await f.close();
  }
});

/** The message a backend sends when `pg_terminate_backend` ends it (FATAL 57P01). */
function terminatedByAdmin(): Uint8Array {
  const enc = new TextEncoder();
  const fields = [
    "SFATAL",
    "VFATAL",
    "C57P01",
    "Mterminating connection due to administrator command",
  ].map((f) => enc.encode(f + "\0"));
  const len = 4 + fields.reduce((n, f) => n + f.length, 0) + 1;
  const msg = new Uint8Array(1 + len);
  msg[0] = "E".charCodeAt(0);
  new DataView(msg.buffer).setInt32(1, len);
  let off = 5;
  for (const f of fields) {
    msg.set(f, off);
    off += f.length;
  }
  return msg; // The last byte stays 0: the end of the fields.
}

/**
 * A TCP proxy in front of the real Postgres. Armed, it ends the next
 * connection at the moment its client sends a statement containing `marker`,
 * exactly as `pg_terminate_backend` would at that instant: the FATAL 57P01
 * error, then the close. A connection lost at an exact point of its life.
 */
function startPgProxy(target: { hostname: string; port: number }) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.Conn>();
  let armed: { marker: string; left: number } | undefined;
  let cut = 0;
  const closeAll = (...conns: Deno.Conn[]) => {
    for (const c of conns) {
      open.delete(c);
      try {
        c.close();
      } catch { /* already closed */ }
    }
  };
  const pump = async (
    from: Deno.Conn,
    to: Deno.Conn,
    inspect: (chunk: Uint8Array) => boolean,
  ) => {
    const buf = new Uint8Array(64 * 1024);
    while (true) {
      const n = await from.read(buf).catch(() => null);
      if (n === null) return;
      const chunk = buf.subarray(0, n);
      if (!inspect(chunk)) return;
      for (let off = 0; off < chunk.length;) {
        const w = await to.write(chunk.subarray(off)).catch(() => null);
        if (w === null) return;
        off += w;
      }
    }
  };
  const decoder = new TextDecoder();
  const accept = (async () => {
    for await (const client of listener) {
      (async () => {
        let server: Deno.Conn;
        try {
          server = await Deno.connect(target);
        } catch {
          closeAll(client);
          return;
        }
        open.add(client);
        open.add(server);
        const up = pump(client, server, (chunk) => {
          if (!armed || !decoder.decode(chunk).includes(armed.marker)) return true;
          if (--armed.left === 0) armed = undefined;
          cut++;
          client.write(terminatedByAdmin()).catch(() => {});
          return false;
        });
        const down = pump(server, client, () => true);
        await Promise.race([up, down]);
        closeAll(client, server);
      })();
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    get cut() {
      return cut;
    },
    /** Cuts the next `times` connections that send `marker`. */
    arm(marker: string, times = 1) {
      armed = { marker, left: times };
    },
    /** Drops every open connection, as a network partition would. */
    dropAll() {
      closeAll(...open);
    },
    async close() {
      listener.close();
      closeAll(...open);
      await accept;
    },
  };
}

Deno.test("Postgres connection lost while the driver sets it up: the aggregator answers 503 and stays up", async () => {
  const f = await Fixture.create();
  const admin = new URL(PG_ADMIN_URL);
  const proxy = startPgProxy({ hostname: admin.hostname, port: Number(admin.port || 5432) });
  try {
    const direct = await f.database();
    // The aggregator reaches its database through the proxy.
    const viaProxy = new URL(direct);
    viaProxy.host = `127.0.0.1:${proxy.port}`;
    f.db = { url: viaProxy.toString(), drop: f.db!.drop };
    const aggregator = await f.startAggregator();
    f.db = { url: direct, drop: f.db.drop };

    // postgres.js loads array types first thing on every new connection; the
    // next connection is lost right then, then every connection drops.
    proxy.arm("pg_catalog.pg_type");
    proxy.dropAll();
    const ids = idsFor("setup-cut", 10);
    const batch = {
      batch_id: crypto.randomUUID(),
      edge_id: "fault-test-edge",
      events: ids.map((id) => usageEvent(id, "fault-setup-cut")),
    };
    // Delivered the way an edge does: retried until acknowledged (bounded).
    const statuses: Array<number | string> = [];
    for (let attempt = 0; attempt < 40; attempt++) {
      if (!aggregator.running) break;
      const res = await postBatch(aggregator.url, batch).catch((err) => ({
        status: `${(err as Error).message}`,
        body: undefined,
      }));
      statuses.push(res.status);
      if (res.status === 200) break;
      await sleep(100);
    }
    console.log(
      `setup cut: ${proxy.cut} connection(s) cut while loading types; delivery attempts ${
        JSON.stringify(statuses)
      }`,
    );
    assert.equal(proxy.cut, 1, "a connection was cut while the driver set it up");
    assertAlive(aggregator, "the aggregator");
    assert.equal(statuses.at(-1), 200, "the batch is acknowledged once Postgres is back");
    assert.ok(
      statuses.slice(0, -1).every((s) => s === 503),
      `only 503s before that: ${JSON.stringify(statuses)}`,
    );
    assertExactlyOnce("setup cut", await readLedger(direct), ids);
    await aggregator.stop();
  } finally {
    await proxy.close();
    await f.close();
  }
});
