import type { Sql } from "../db/client.ts";
import { type UsageEvent, UsageEventSchema } from "./usage_event.ts";

export interface IngestResult {
  batch_id: string;
  /** Events new to the ledger. */
  accepted: number;
  /** Events already in the ledger: a redelivery, counted once. */
  duplicates: number;
  /** Events that failed validation; kept in usage_events_rejected. */
  rejected: Array<{ position: number; reason: string }>;
}

/**
 * Adds the rows just inserted (`ins`) to one daily rollup, grouped by UTC day
 * and `key`. Both rollups have the same shape; only the key differs.
 */
function rollup(sql: Sql, table: string, keyColumn: string, keyExpr: string) {
  return sql`
    INSERT INTO ${sql(table)} AS r
    SELECT (occurred_at AT TIME ZONE 'UTC')::date, ${sql.unsafe(keyExpr)}, count(*),
      count(*) FILTER (WHERE NOT success), sum(input_tokens), sum(output_tokens),
      sum(tool_calls_count), sum(audio_seconds_in + audio_seconds_out), sum(cost_usd),
      coalesce(sum(cost_usd) FILTER (WHERE mode = 'managed'), 0)
    FROM ins GROUP BY 1, 2
    ON CONFLICT (day, ${sql(keyColumn)}) DO UPDATE SET
      requests = r.requests + excluded.requests, errors = r.errors + excluded.errors,
      input_tokens = r.input_tokens + excluded.input_tokens,
      output_tokens = r.output_tokens + excluded.output_tokens,
      tool_calls = r.tool_calls + excluded.tool_calls,
      audio_seconds = r.audio_seconds + excluded.audio_seconds,
      cost_usd = r.cost_usd + excluded.cost_usd,
      managed_cost_usd = r.managed_cost_usd + excluded.managed_cost_usd`;
}

/**
 * Inserts events and updates both daily rollups in one statement, one round
 * trip per batch. Only rows actually inserted reach the rollups, so a
 * redelivered batch changes nothing: exactly once, by tenant and `request_id`.
 */
async function insertEvents(sql: Sql, batchId: string, events: UsageEvent[]): Promise<number> {
  const rows = events.map(({ lane: _lane, ...e }) => e);
  const [{ inserted }] = await sql<{ inserted: number }[]>`
    WITH input AS (
      SELECT * FROM jsonb_to_recordset(${sql.json(rows)}::jsonb) AS x(
        request_id text, tenant_id text, user_id text, session_id text, provider text,
        model text, input_tokens integer, output_tokens integer, tool_calls_count integer,
        audio_seconds_in double precision, audio_seconds_out double precision,
        latency_ms integer, ttft_ms integer, success boolean, error_code text, mode text,
        cost_usd numeric, occurred_at timestamptz)
    ),
    ins AS (
      INSERT INTO usage_events (request_id, tenant_id, user_id, session_id, provider, model,
        input_tokens, output_tokens, tool_calls_count, audio_seconds_in, audio_seconds_out,
        latency_ms, ttft_ms, success, error_code, mode, cost_usd, occurred_at, batch_id)
      SELECT request_id, tenant_id, user_id, session_id, provider, model,
        input_tokens, output_tokens, tool_calls_count, audio_seconds_in, audio_seconds_out,
        latency_ms, ttft_ms, success, error_code, mode, cost_usd, occurred_at, ${batchId}
      FROM input
      ON CONFLICT (tenant_id, request_id) DO NOTHING
      RETURNING *
    ),
    by_tenant AS (${rollup(sql, "usage_daily_tenant", "tenant_id", "tenant_id")}),
    by_model AS (${rollup(sql, "usage_daily_model", "model", "coalesce(model, 'unknown')")})
    SELECT count(*)::int AS inserted FROM ins`;
  return inserted;
}

/** Validates each event on its own, ingests the good ones, and keeps the bad ones aside. */
export async function ingestBatch(
  sql: Sql,
  batchId: string,
  events: unknown[],
): Promise<IngestResult> {
  const good: UsageEvent[] = [];
  const bad: Array<{ position: number; reason: string; payload: unknown }> = [];
  events.forEach((raw, position) => {
    const parsed = UsageEventSchema.safeParse(raw);
    if (parsed.success) good.push(parsed.data);
    else {
      const issue = parsed.error.issues[0];
      bad.push({
        position,
        reason: `${issue.path.join(".") || "event"}: ${issue.message}`,
        payload: raw,
      });
    }
  });
  // Duplicates inside one batch are one request: keep the first.
  const byId = new Map<string, UsageEvent>();
  for (const e of good) {
    const key = `${e.tenant_id}\u0000${e.request_id}`;
    if (!byId.has(key)) byId.set(key, e);
  }
  const unique = [...byId.values()];
  const accepted = unique.length ? await insertEvents(sql, batchId, unique) : 0;
  if (bad.length) {
    // The payload travels as JSON text and is cast in SQL, so that a null or
    // scalar "event" is stored as the JSON value it was, not as SQL NULL.
    const rows = bad.map((b) => ({
      position: b.position,
      reason: b.reason,
      payload: JSON.stringify(b.payload ?? null),
    }));
    await sql`
      INSERT INTO usage_events_rejected (batch_id, position, reason, payload)
      SELECT ${batchId}, position, reason, payload::jsonb
      FROM jsonb_to_recordset(${
      sql.json(rows)
    }::jsonb) AS x(position integer, reason text, payload text)
      ON CONFLICT (batch_id, position) DO NOTHING`;
  }
  return {
    batch_id: batchId,
    accepted,
    duplicates: good.length - accepted,
    rejected: bad.map(({ position, reason }) => ({ position, reason })),
  };
}
