import assert from "node:assert/strict";
import postgres from "postgres";
import type { Sql } from "../../src/db/client.ts";
import { migrate } from "../../src/db/migrate.ts";
import { ingestBatch } from "../../src/metering/ingest.ts";
import type { UsageEvent } from "../../src/metering/usage_event.ts";
import { DB_KINDS, freshPostgres, withDatabase } from "../support/db.ts";
import { micros, usageEvent, usdText } from "./_helpers.ts";

const count = async (sql: Sql, table: string) =>
  Number((await sql`SELECT count(*)::int AS n FROM ${sql(table)}`)[0].n);

interface Rollup {
  key: string;
  requests: number;
  errors: number;
  input_tokens: number;
  output_tokens: number;
  tool_calls: number;
  audio_seconds: number;
  cost_usd: string;
  managed_cost_usd: string;
}

/** A rollup table as plain rows keyed "<day>|<tenant or model>", sorted. */
async function rollup(sql: Sql, table: "usage_daily_tenant" | "usage_daily_model") {
  const keyCol = table === "usage_daily_tenant" ? "tenant_id" : "model";
  const rows = await sql`
    SELECT to_char(day, 'YYYY-MM-DD') || '|' || ${sql(keyCol)} AS key,
      requests::int, errors::int, input_tokens::int, output_tokens::int, tool_calls::int,
      audio_seconds::float8, cost_usd::text, managed_cost_usd::text
    FROM ${sql(table)} ORDER BY 1`;
  return rows.map((r) => ({ ...r }) as Rollup);
}

/** The rollup the events should produce, computed independently (money in integer micro-dollars). */
function expectedRollup(events: UsageEvent[], by: "tenant" | "model"): Rollup[] {
  const acc = new Map<string, Rollup & { cost: number; managed: number }>();
  for (const e of events) {
    const key = `${e.occurred_at.slice(0, 10)}|${
      by === "tenant" ? e.tenant_id : (e.model ?? "unknown")
    }`;
    const r = acc.get(key) ?? {
      key,
      requests: 0,
      errors: 0,
      input_tokens: 0,
      output_tokens: 0,
      tool_calls: 0,
      audio_seconds: 0,
      cost_usd: "",
      managed_cost_usd: "",
      cost: 0,
      managed: 0,
    };
    r.requests++;
    if (!e.success) r.errors++;
    r.input_tokens += e.input_tokens;
    r.output_tokens += e.output_tokens;
    r.tool_calls += e.tool_calls_count;
    r.audio_seconds += e.audio_seconds_in + e.audio_seconds_out;
    r.cost += micros(e.cost_usd);
    if (e.mode === "managed") r.managed += micros(e.cost_usd);
    acc.set(key, r);
  }
  return [...acc.values()]
    .map(({ cost, managed, ...r }) => ({
      ...r,
      cost_usd: usdText(cost),
      managed_cost_usd: usdText(managed),
    }))
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

/** A varied set: two tenants, three models (one null), both lanes, failures, tools and audio. */
function mixedEvents(): UsageEvent[] {
  return [
    usageEvent({ tenant_id: "t1", model: "m-a", mode: "managed", cost_usd: 0.001234 }),
    usageEvent({
      tenant_id: "t1",
      model: "m-a",
      mode: "byok",
      cost_usd: 0.5,
      input_tokens: 1000,
      output_tokens: 2000,
    }),
    usageEvent({
      tenant_id: "t1",
      model: "m-b",
      mode: "managed",
      success: false,
      error_code: "upstream_timeout",
      cost_usd: 0,
      input_tokens: 0,
      output_tokens: 0,
    }),
    usageEvent({
      tenant_id: "t1",
      model: null,
      provider: null,
      mode: "managed",
      success: false,
      error_code: "budget_exceeded",
      cost_usd: 0,
      input_tokens: 0,
      output_tokens: 0,
    }),
    usageEvent({
      tenant_id: "t2",
      model: "m-b",
      mode: "managed",
      tool_calls_count: 3,
      audio_seconds_in: 1.25,
      audio_seconds_out: 2.5,
      cost_usd: 12.345678,
    }),
    usageEvent({
      tenant_id: "t2",
      model: "m-a",
      mode: "byok",
      tool_calls_count: 1,
      audio_seconds_in: 0.5,
      cost_usd: 0.000001,
    }),
  ];
}

for (const kind of DB_KINDS) {
  Deno.test(`${kind}: ingestBatch is exactly once per request_id across redeliveries`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const events = [usageEvent(), usageEvent(), usageEvent()];
      assert.deepEqual(await ingestBatch(sql, "b-1", events), {
        batch_id: "b-1",
        accepted: 3,
        duplicates: 0,
        rejected: [],
      });
      assert.deepEqual(await ingestBatch(sql, "b-1", events), {
        batch_id: "b-1",
        accepted: 0,
        duplicates: 3,
        rejected: [],
      });
      // An edge that re-batched after a restart: a new batch id, the same requests.
      const again = await ingestBatch(sql, "b-2", [events[1], usageEvent()]);
      assert.equal(again.accepted, 1);
      assert.equal(again.duplicates, 1);
      assert.equal(await count(sql, "usage_events"), 4);
      const [row] = await sql`SELECT batch_id FROM usage_events WHERE request_id = ${
        events[1].request_id
      }`;
      assert.equal(row.batch_id, "b-1", "the first delivery's row stays");
    });
  });

  Deno.test(`${kind}: a request_id twice in one batch is counted once (the first)`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const a = usageEvent({ input_tokens: 7 });
      const dup = { ...a, input_tokens: 999 };
      const b = usageEvent();
      const result = await ingestBatch(sql, "b-1", [a, b, dup]);
      assert.equal(result.accepted, 2);
      assert.equal(result.duplicates, 1);
      assert.deepEqual(result.rejected, []);
      assert.equal(await count(sql, "usage_events"), 2);
      const [row] =
        await sql`SELECT input_tokens FROM usage_events WHERE request_id = ${a.request_id}`;
      assert.equal(row.input_tokens, 7);
      const [tenant] = await rollup(sql, "usage_daily_tenant");
      assert.equal(tenant.requests, 2);
      assert.equal(tenant.input_tokens, 7 + b.input_tokens);
    });
  });

  Deno.test(`${kind}: invalid events are rejected by position and kept aside; valid ones stored`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const good1 = usageEvent();
      const { user_id: _omit, ...missing } = usageEvent();
      const wrongType = { ...usageEvent(), input_tokens: "12" };
      const successWithError = { ...usageEvent(), success: true, error_code: "boom" };
      const failureWithout = { ...usageEvent(), success: false, error_code: null };
      const laneMismatch = { ...usageEvent({ mode: "byok" }), lane: "managed" };
      const extraField = { ...usageEvent(), surprise: 1 };
      const negative = { ...usageEvent(), cost_usd: -0.01 };
      const badDate = { ...usageEvent(), occurred_at: "yesterday" };
      const good2 = usageEvent({ mode: "managed" });
      const batch: unknown[] = [
        good1,
        missing,
        wrongType,
        successWithError,
        failureWithout,
        laneMismatch,
        extraField,
        negative,
        badDate,
        good2,
      ];
      const result = await ingestBatch(sql, "b-bad", batch);
      assert.equal(result.accepted, 2);
      assert.equal(result.duplicates, 0);
      assert.deepEqual(result.rejected.map((r) => r.position), [1, 2, 3, 4, 5, 6, 7, 8]);
      const reason = (p: number) => result.rejected.find((r) => r.position === p)!.reason;
      assert.match(reason(1), /^user_id: /);
      assert.match(reason(2), /^input_tokens: /);
      assert.match(reason(3), /^error_code: error_code is set exactly when success is false/);
      assert.match(reason(4), /^error_code: /);
      assert.match(reason(5), /^lane: lane must equal mode/);
      assert.match(reason(6), /surprise/);
      assert.match(reason(7), /^cost_usd: /);
      assert.match(reason(8), /^occurred_at: /);

      const stored = await sql`SELECT request_id FROM usage_events ORDER BY request_id`;
      assert.deepEqual(stored.map((r) => r.request_id), [good1.request_id, good2.request_id]);

      const kept = await sql`
        SELECT batch_id, position, reason, payload FROM usage_events_rejected ORDER BY position`;
      assert.equal(kept.length, 8);
      for (const row of kept) {
        assert.equal(row.batch_id, "b-bad");
        assert.equal(row.reason, reason(row.position));
        assert.deepEqual(row.payload, batch[row.position], `payload ${row.position} kept as sent`);
      }

      // Redelivery stores neither the events nor the rejections twice.
      const again = await ingestBatch(sql, "b-bad", batch);
      assert.equal(again.accepted, 0);
      assert.equal(again.duplicates, 2);
      assert.equal(again.rejected.length, 8);
      assert.equal(await count(sql, "usage_events_rejected"), 8);
      assert.equal(await count(sql, "usage_events"), 2);
    });
  });

  Deno.test(`${kind}: non-object events (null, string, array) are rejected, not fatal`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const good = usageEvent();
      const batch: unknown[] = [null, "event", [1, 2], 42, good];
      const result = await ingestBatch(sql, "b-odd", batch);
      assert.equal(result.accepted, 1);
      assert.deepEqual(result.rejected.map((r) => r.position), [0, 1, 2, 3]);
      for (const r of result.rejected) assert.match(r.reason, /^event: /);
      const kept = await sql`SELECT position, payload FROM usage_events_rejected ORDER BY position`;
      assert.deepEqual(kept.map((r) => r.payload), [null, "event", [1, 2], 42]);
      assert.equal(await count(sql, "usage_events"), 1);
    });
  });

  Deno.test(`${kind}: a batch of only invalid events stores nothing in the ledger`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const result = await ingestBatch(sql, "b-x", [{ request_id: "r" }]);
      assert.equal(result.accepted, 0);
      assert.equal(result.duplicates, 0);
      assert.equal(result.rejected.length, 1);
      assert.equal(await count(sql, "usage_events"), 0);
      assert.equal(await count(sql, "usage_daily_tenant"), 0);
      assert.equal(await count(sql, "usage_events_rejected"), 1);
    });
  });

  Deno.test(`${kind}: rollups equal the sums of the events and ignore redelivery`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const events = mixedEvents();
      await ingestBatch(sql, "b-1", events.slice(0, 4));
      await ingestBatch(sql, "b-2", events.slice(4));
      const tenant = await rollup(sql, "usage_daily_tenant");
      const model = await rollup(sql, "usage_daily_model");
      assert.deepEqual(tenant, expectedRollup(events, "tenant"));
      assert.deepEqual(model, expectedRollup(events, "model"));
      // Spot checks against hand-computed values.
      const t1 = tenant.find((r) => r.key === "2024-03-10|t1")!;
      assert.equal(t1.requests, 4);
      assert.equal(t1.errors, 2);
      assert.equal(t1.cost_usd, "0.501234");
      assert.equal(t1.managed_cost_usd, "0.001234", "byok cost is not managed spend");
      const t2 = tenant.find((r) => r.key === "2024-03-10|t2")!;
      assert.equal(t2.tool_calls, 4);
      assert.equal(t2.audio_seconds, 4.25);
      assert.equal(t2.managed_cost_usd, "12.345678");
      assert.ok(
        model.some((r) => r.key === "2024-03-10|unknown"),
        "null model rolls up as unknown",
      );

      // Redelivery, whole and in a different cut, changes nothing.
      await ingestBatch(sql, "b-1", events.slice(0, 4));
      await ingestBatch(sql, "b-3", [...events].reverse());
      assert.deepEqual(await rollup(sql, "usage_daily_tenant"), tenant);
      assert.deepEqual(await rollup(sql, "usage_daily_model"), model);

      // A later batch adds to the existing rows.
      const more = usageEvent({ tenant_id: "t1", model: "m-a", mode: "managed", cost_usd: 1 });
      await ingestBatch(sql, "b-4", [more]);
      assert.deepEqual(
        await rollup(sql, "usage_daily_tenant"),
        expectedRollup([...events, more], "tenant"),
      );
      assert.deepEqual(
        await rollup(sql, "usage_daily_model"),
        expectedRollup([...events, more], "model"),
      );
    });
  });

  Deno.test(`${kind}: events on two UTC days land in two rollup rows`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const events = [
        usageEvent({ occurred_at: "2024-03-01T23:59:59.999Z" }),
        usageEvent({ occurred_at: "2024-03-02T00:00:00.000Z" }),
        usageEvent({ occurred_at: "2024-03-02T12:00:00Z" }),
        usageEvent({ occurred_at: "2024-02-29T00:00:00Z", model: null }),
      ];
      await ingestBatch(sql, "b-days", events);
      const tenant = await rollup(sql, "usage_daily_tenant");
      assert.deepEqual(tenant.map((r) => [r.key, r.requests]), [
        ["2024-02-29|tenant-a", 1],
        ["2024-03-01|tenant-a", 1],
        ["2024-03-02|tenant-a", 2],
      ]);
      assert.deepEqual(tenant, expectedRollup(events, "tenant"));
      const model = await rollup(sql, "usage_daily_model");
      assert.deepEqual(model.map((r) => r.key), [
        "2024-02-29|unknown",
        "2024-03-01|gpt-x",
        "2024-03-02|gpt-x",
      ]);
      assert.deepEqual(model, expectedRollup(events, "model"));
    });
  });

  Deno.test(`${kind}: money is exact: 3 × 0.000001 = 0.000003, 0.1 + 0.2 = 0.3`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      await ingestBatch(sql, "b-a", [
        usageEvent({ tenant_id: "micro", cost_usd: 0.000001, mode: "managed" }),
        usageEvent({ tenant_id: "micro", cost_usd: 0.000001, mode: "managed" }),
        usageEvent({ tenant_id: "micro", cost_usd: 0.000001, mode: "managed" }),
        usageEvent({ tenant_id: "tenth", cost_usd: 0.1, model: "m-t" }),
        usageEvent({ tenant_id: "tenth", cost_usd: 0.2, model: "m-t" }),
        usageEvent({ tenant_id: "big", cost_usd: 999999.999999, model: "m-big" }),
        usageEvent({ tenant_id: "big", cost_usd: 0.000001, model: "m-big" }),
      ]);
      const byTenant = Object.fromEntries(
        (await rollup(sql, "usage_daily_tenant")).map((r) => [r.key.split("|")[1], r]),
      );
      assert.equal(byTenant.micro.cost_usd, "0.000003");
      assert.equal(byTenant.micro.managed_cost_usd, "0.000003");
      assert.equal(byTenant.tenth.cost_usd, "0.300000");
      assert.equal(byTenant.tenth.managed_cost_usd, "0.000000");
      assert.equal(byTenant.big.cost_usd, "1000000.000000");
      const [sum] = await sql`SELECT sum(cost_usd)::text AS s FROM usage_events
        WHERE tenant_id = 'micro'`;
      assert.equal(sum.s, "0.000003");
      const byModel = Object.fromEntries(
        (await rollup(sql, "usage_daily_model")).map((r) => [r.key.split("|")[1], r]),
      );
      assert.equal(byModel["m-t"].cost_usd, "0.300000");
    });
  });

  Deno.test(`${kind}: stored events keep every field (lane is not a column, mode is)`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const e = usageEvent({
        session_id: null,
        mode: "managed",
        audio_seconds_in: 1.5,
        audio_seconds_out: 0.25,
        tool_calls_count: 2,
        latency_ms: 1234,
        cost_usd: 0.012345,
        occurred_at: "2024-05-06T07:08:09.123Z",
      });
      await ingestBatch(sql, "b-f", [e]);
      const [row] = await sql`
        SELECT request_id, tenant_id, user_id, session_id, provider, model, input_tokens,
          output_tokens, tool_calls_count, audio_seconds_in, audio_seconds_out, latency_ms,
          success, error_code, mode, cost_usd::text AS cost_usd, occurred_at, batch_id
        FROM usage_events`;
      const { lane: _lane, ...rest } = e;
      assert.deepEqual(
        { ...row, occurred_at: (row.occurred_at as Date).toISOString() },
        { ...rest, cost_usd: "0.012345", batch_id: "b-f" },
      );
    });
  });

  Deno.test(`${kind}: migrate() is idempotent and records every version`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      assert.deepEqual(await migrate(sql), []);
      assert.deepEqual(await migrate(sql), []);
      const rows = await sql`SELECT version, file FROM schema_migrations ORDER BY version`;
      assert.deepEqual(rows.map((r) => ({ ...r })), [
        { version: 1, file: "001_ledger.sql" },
        { version: 2, file: "002_control.sql" },
        { version: 3, file: "003_ttft.sql" },
      ]);
    });
  });
}

Deno.test("postgres: a fresh database migrates once; two concurrent migrate() calls apply it once", async () => {
  const pg = await freshPostgres();
  const a = postgres(pg.url, { max: 2, onnotice: () => {} });
  const b = postgres(pg.url, { max: 2, onnotice: () => {} });
  try {
    // Settle both before asserting, so no migration is still running at sql.end().
    const settled = await Promise.allSettled([migrate(a), migrate(b)]);
    const errors = settled.flatMap((s) => s.status === "rejected" ? [String(s.reason)] : []);
    assert.deepEqual(errors, [], "both succeed");
    const results = settled.map((s) => (s as PromiseFulfilledResult<number[]>).value);
    assert.deepEqual(results.flat(), [1, 2, 3], "exactly one of them applied the migrations");
    assert.ok(results.some((r) => r.length === 0));
    const rows = await a`SELECT version FROM schema_migrations ORDER BY version`;
    assert.deepEqual(rows.map((r) => r.version), [1, 2, 3]);
    const [t] = await b`SELECT count(*)::int AS n FROM information_schema.tables
      WHERE table_schema = 'public' AND table_name LIKE 'usage_%'`;
    assert.equal(t.n, 4);
    assert.deepEqual(await migrate(a), []);
    // The advisory lock was released: another session can take it at once.
    const [lock] = await b`SELECT pg_try_advisory_lock(7204331) AS ok`;
    assert.equal(lock.ok, true);
    await b`SELECT pg_advisory_unlock_all()`;
  } finally {
    await a.end();
    await b.end();
    await pg.drop();
  }
});

Deno.test("postgres: rollup days are UTC days whatever the session time zone", async () => {
  const pg = await freshPostgres();
  const sql = postgres(pg.url, {
    max: 1,
    onnotice: () => {},
    connection: { TimeZone: "America/New_York" },
  });
  try {
    await migrate(sql);
    const events = [
      usageEvent({ occurred_at: "2024-03-01T02:00:00.000Z" }),
      usageEvent({ occurred_at: "2024-03-01T23:00:00.000Z" }),
      usageEvent({ occurred_at: "2024-03-02T03:00:00.000Z" }),
    ];
    await ingestBatch(sql, "b-tz", events);
    assert.deepEqual(await rollup(sql, "usage_daily_tenant"), expectedRollup(events, "tenant"));
    assert.deepEqual(await rollup(sql, "usage_daily_model"), expectedRollup(events, "model"));
  } finally {
    await sql.end();
    await pg.drop();
  }
});

for (const kind of DB_KINDS) {
  Deno.test(`${kind}: one tenant's request ids never suppress another tenant's events`, async () => {
    await withDatabase(kind, async (db) => {
      const first = await ingestBatch(db.sql, "b-a", [
        usageEvent({ request_id: "shared-id", tenant_id: "tenant-a" }),
      ]);
      const second = await ingestBatch(db.sql, "b-b", [
        usageEvent({ request_id: "shared-id", tenant_id: "tenant-b" }),
      ]);
      assert.equal(first.accepted, 1);
      assert.equal(second.accepted, 1, "same id, other tenant: a different request");
      const again = await ingestBatch(db.sql, "b-b2", [
        usageEvent({ request_id: "shared-id", tenant_id: "tenant-b" }),
      ]);
      assert.equal(again.duplicates, 1, "the same tenant's retry is still counted once");
      const [{ n }] = await db.sql`SELECT count(*)::int AS n FROM usage_events`;
      assert.equal(n, 2);
    });
  });
}

Deno.test("postgres: a ledger released at version 2 gains ttft_ms from migration 3", async () => {
  const pg = await freshPostgres();
  const sql = postgres(pg.url, { max: 1, onnotice: () => {} });
  try {
    await migrate(sql);
    // As a ledger migrated before 003 existed.
    await sql`ALTER TABLE usage_events DROP COLUMN ttft_ms`;
    await sql`DELETE FROM schema_migrations WHERE version = 3`;
    assert.deepEqual(await migrate(sql), [3]);
    const [col] = await sql`SELECT data_type FROM information_schema.columns
      WHERE table_name = 'usage_events' AND column_name = 'ttft_ms'`;
    assert.equal(col.data_type, "integer");
  } finally {
    await sql.end();
    await pg.drop();
  }
});
