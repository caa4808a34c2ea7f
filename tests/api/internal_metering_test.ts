import assert from "node:assert/strict";
import { signBody } from "../../src/metering/signature.ts";
import { freshPostgres } from "../support/db.ts";
import { startGateway, testConfig, type TestGateway } from "../support/gateway.ts";

const SECRET = "internal-metering-test-secret";
const BATCHES = "/internal/metering/batches";
const ROLLUPS = "/internal/metering/rollups";

/** An aggregator-only gateway on a fresh Postgres database. */
async function withAggregator(fn: (gw: TestGateway) => Promise<void>) {
  const dataDir = await Deno.makeTempDir({ prefix: "cvg-internal-" });
  const pg = await freshPostgres();
  let gw: TestGateway | undefined;
  try {
    gw = await startGateway(testConfig({
      role: "aggregator",
      data_dir: dataDir,
      database_url: pg.url,
      metering: { secret: SECRET },
    }));
    await fn(gw);
  } finally {
    await gw?.close();
    await pg.drop();
    await Deno.remove(dataDir, { recursive: true });
  }
}

function event(request_id: string, over: Record<string, unknown> = {}) {
  return {
    request_id,
    tenant_id: "tenant-a",
    user_id: "u1",
    session_id: null,
    provider: "demo",
    model: "convergio-demo",
    input_tokens: 10,
    output_tokens: 20,
    tool_calls_count: 0,
    audio_seconds_in: 0,
    audio_seconds_out: 0,
    latency_ms: 7,
    success: true,
    error_code: null,
    mode: "managed",
    lane: "managed",
    cost_usd: 0.125,
    occurred_at: new Date().toISOString(),
    ...over,
  };
}

async function postBatch(gw: TestGateway, body: string, signature?: string) {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (signature !== undefined) headers["x-convergio-signature"] = signature;
  const res = await fetch(`${gw.url}${BATCHES}`, { method: "POST", headers, body });
  return { status: res.status, json: await res.json() };
}

const signed = async (gw: TestGateway, body: string) =>
  postBatch(gw, body, await signBody(SECRET, body, Date.now()));

async function getRollups(gw: TestGateway, query: string, signature?: string) {
  const headers: Record<string, string> = {};
  if (signature !== undefined) headers["x-convergio-signature"] = signature;
  const res = await fetch(`${gw.url}${ROLLUPS}${query}`, { headers });
  return { status: res.status, json: await res.json() };
}

Deno.test("internal batches: unsigned, badly signed and stale requests get 401", async () => {
  await withAggregator(async (gw) => {
    const body = JSON.stringify({ batch_id: "b-auth", events: [event("r-auth")] });
    const now = Date.now();
    const cases: Array<[string, string | undefined]> = [
      ["unsigned", undefined],
      ["empty header", ""],
      ["garbage header", "not-a-signature"],
      ["wrong secret", await signBody("some-other-secret", body, now)],
      ["other body", await signBody(SECRET, body + " ", now)],
      ["stale timestamp", await signBody(SECRET, body, now - 10 * 60_000)],
      ["future timestamp", await signBody(SECRET, body, now + 10 * 60_000)],
      ["odd hex", (await signBody(SECRET, body, now)).slice(0, -1)],
    ];
    for (const [what, signature] of cases) {
      const res = await postBatch(gw, body, signature);
      assert.equal(res.status, 401, what);
      assert.equal(res.json.error.code, "auth.invalid", what);
    }
    const [{ n }] = await gw.runtime.db!.sql`SELECT count(*)::int AS n FROM usage_events`;
    assert.equal(n, 0);
  });
});

Deno.test("internal batches: malformed batches get 400 naming the field", async () => {
  await withAggregator(async (gw) => {
    const notJson = await signed(gw, "{not json");
    assert.equal(notJson.status, 400);
    assert.equal(notJson.json.error.code, "request.invalid");
    assert.match(notJson.json.error.message, /JSON/);

    for (
      const [what, batch, field] of [
        ["missing batch_id", { events: [event("r1")] }, "batch_id"],
        ["missing events", { batch_id: "b1" }, "events"],
        ["empty events", { batch_id: "b1", events: [] }, "events"],
        ["events not an array", { batch_id: "b1", events: {} }, "events"],
        ["unknown key", { batch_id: "b1", events: [event("r1")], extra: true }, ""],
        ["not an object", [event("r1")], ""],
      ] as const
    ) {
      const res = await signed(gw, JSON.stringify(batch));
      assert.equal(res.status, 400, what);
      assert.equal(res.json.error.code, "request.invalid", what);
      if (field) assert.match(res.json.error.message, new RegExp(`^${field}:`), what);
    }
  });
});

Deno.test("internal batches: bad events are set aside, good ones ingested exactly once", async () => {
  await withAggregator(async (gw) => {
    const sql = gw.runtime.db!.sql;
    const body = JSON.stringify({
      batch_id: "b-mixed",
      edge_id: "edge-1",
      events: [
        event("r-good-1"),
        event("r-bad", { input_tokens: -1 }),
        event("r-good-2", { mode: "byok", lane: "byok", success: false, error_code: "x.y" }),
      ],
    });
    const first = await signed(gw, body);
    assert.equal(first.status, 200, JSON.stringify(first.json));
    assert.equal(first.json.batch_id, "b-mixed");
    assert.equal(first.json.accepted, 2);
    assert.equal(first.json.duplicates, 0);
    assert.equal(first.json.rejected.length, 1);
    assert.equal(first.json.rejected[0].position, 1);
    assert.match(first.json.rejected[0].reason, /^input_tokens:/);

    const rows = await sql<{ request_id: string; batch_id: string; success: boolean }[]>`
      SELECT request_id, batch_id, success FROM usage_events ORDER BY request_id`;
    assert.deepEqual(rows.map((r) => ({ ...r })), [
      { request_id: "r-good-1", batch_id: "b-mixed", success: true },
      { request_id: "r-good-2", batch_id: "b-mixed", success: false },
    ]);
    const rejected = await sql<{ position: number; payload: { request_id: string } }[]>`
      SELECT position, payload FROM usage_events_rejected WHERE batch_id = 'b-mixed'`;
    assert.equal(rejected.length, 1);
    assert.equal(rejected[0].position, 1);
    assert.equal(rejected[0].payload.request_id, "r-bad");

    // Redelivery, signed afresh: nothing counts twice.
    const second = await signed(gw, body);
    assert.equal(second.status, 200);
    assert.equal(second.json.accepted, 0);
    assert.equal(second.json.duplicates, 2);
    assert.deepEqual(second.json.rejected, first.json.rejected);
    const [{ n }] = await sql`SELECT count(*)::int AS n FROM usage_events`;
    assert.equal(n, 2);
    const [daily] = await sql`
      SELECT requests::int AS requests, errors::int AS errors FROM usage_daily_tenant`;
    assert.deepEqual({ ...daily }, { requests: 2, errors: 1 });
    const [{ r }] = await sql`SELECT count(*)::int AS r FROM usage_events_rejected`;
    assert.equal(r, 1);

    // The same request in another batch is still one request.
    const other = await signed(
      gw,
      JSON.stringify({ batch_id: "b-other", events: [event("r-good-1"), event("r-new")] }),
    );
    assert.equal(other.json.accepted, 1);
    assert.equal(other.json.duplicates, 1);
  });
});

Deno.test("internal rollups: signed reads give managed spend per tenant for the day and month", async () => {
  await withAggregator(async (gw) => {
    // Days of last month, so they are neither today nor subject to retention.
    const now = new Date();
    const lastMonth = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 1, 1));
    const ym = lastMonth.toISOString().slice(0, 7);
    const monthBefore = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 2, 28))
      .toISOString().slice(0, 10);
    const day = `${ym}-15`;
    const at = (d: string, time = "12:00:00.000Z") => `${d}T${time}`;
    const events = [
      event("a-day-1", { occurred_at: at(day), cost_usd: 0.5 }),
      event("a-day-2", { occurred_at: at(day, "23:59:59.999Z"), cost_usd: 0.25 }),
      event("a-early", { occurred_at: at(`${ym}-02`), cost_usd: 1 }),
      event("a-later", { occurred_at: at(`${ym}-16`), cost_usd: 8 }),
      event("a-before", { occurred_at: at(monthBefore), cost_usd: 16 }),
      event("a-byok", { occurred_at: at(day), cost_usd: 32, mode: "byok", lane: "byok" }),
      event("b-day", { tenant_id: "tenant-b", occurred_at: at(day), cost_usd: 0.125 }),
      event("c-byok", {
        tenant_id: "tenant-c",
        occurred_at: at(day),
        cost_usd: 4,
        mode: "byok",
        lane: "byok",
      }),
      event("d-early", { tenant_id: "tenant-d", occurred_at: at(`${ym}-01`), cost_usd: 2 }),
    ];
    const ingest = await signed(gw, JSON.stringify({ batch_id: "b-roll", events }));
    assert.equal(ingest.json.accepted, events.length);

    const path = `${ROLLUPS}?day=${day}`;
    const res = await getRollups(gw, `?day=${day}`, await signBody(SECRET, path, Date.now()));
    assert.equal(res.status, 200, JSON.stringify(res.json));
    assert.equal(res.json.day, day);
    const tenants = [...res.json.tenants].sort((
      x: { tenant_id: string },
      y: { tenant_id: string },
    ) => x.tenant_id.localeCompare(y.tenant_id));
    assert.deepEqual(tenants, [
      { tenant_id: "tenant-a", day_usd: 0.75, month_usd: 1.75 },
      { tenant_id: "tenant-b", day_usd: 0.125, month_usd: 0.125 },
      { tenant_id: "tenant-d", day_usd: 0, month_usd: 2 },
    ]);
    assert.equal(res.json.global_day_usd, 0.875);

    const empty = `${ROLLUPS}?day=2001-01-01`;
    const none = await getRollups(gw, "?day=2001-01-01", await signBody(SECRET, empty, Date.now()));
    assert.deepEqual(none.json, { day: "2001-01-01", tenants: [], global_day_usd: 0 });

    const unsigned = await getRollups(gw, `?day=${day}`);
    assert.equal(unsigned.status, 401);
    assert.equal(unsigned.json.error.code, "auth.invalid");
    // The signature covers the query: one signed for another day does not pass.
    const otherDay = await getRollups(
      gw,
      `?day=${ym}-16`,
      await signBody(SECRET, path, Date.now()),
    );
    assert.equal(otherDay.status, 401);
    const pathOnly = await getRollups(
      gw,
      `?day=${day}`,
      await signBody(SECRET, ROLLUPS, Date.now()),
    );
    assert.equal(pathOnly.status, 401);
    const stale = await getRollups(
      gw,
      `?day=${day}`,
      await signBody(SECRET, path, Date.now() - 3_600_000),
    );
    assert.equal(stale.status, 401);

    for (const bad of ["?day=2024-3-01", "?day=yesterday", "", "?day="]) {
      const res = await getRollups(
        gw,
        bad,
        await signBody(SECRET, `${ROLLUPS}${bad}`, Date.now()),
      );
      assert.equal(res.status, 400, bad);
      assert.equal(res.json.error.code, "request.invalid", bad);
    }
  });
});

Deno.test("internal batches: a ledger that fails mid-ingest answers 503 retryable, then recovers", async () => {
  await withAggregator(async (gw) => {
    const sql = gw.runtime.db!.sql;
    await sql`ALTER TABLE usage_daily_model RENAME TO usage_daily_model_away`;
    const body = JSON.stringify({ batch_id: "b-down", events: [event("r-down")] });
    const down = await signed(gw, body);
    assert.equal(down.status, 503, JSON.stringify(down.json));
    assert.equal(down.json.error.code, "internal");
    assert.equal(down.json.error.retryable, true);
    // One statement: nothing half-written.
    const [{ n }] = await sql`SELECT count(*)::int AS n FROM usage_events`;
    assert.equal(n, 0);

    await sql`ALTER TABLE usage_daily_model_away RENAME TO usage_daily_model`;
    const retried = await signed(gw, body);
    assert.equal(retried.status, 200);
    assert.equal(retried.json.accepted, 1);
  });
});
