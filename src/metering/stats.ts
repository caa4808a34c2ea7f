import type { Sql } from "../db/client.ts";

/** Latency percentiles per time bucket, from the ledger: every edge's requests. */
export async function latencySeries(sql: Sql, since: Date, bucket: "minute" | "hour") {
  return [
    ...await sql<
      Array<{
        t: Date;
        requests: number;
        p50_ms: number | null;
        p95_ms: number | null;
        p99_ms: number | null;
        ttft_p50_ms: number | null;
        ttft_p95_ms: number | null;
      }>
    >`
    SELECT date_trunc(${bucket}, occurred_at) AS t, count(*)::int AS requests,
      percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms)
        FILTER (WHERE ttft_ms IS NULL)::float8 AS p50_ms,
      percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)
        FILTER (WHERE ttft_ms IS NULL)::float8 AS p95_ms,
      percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms)
        FILTER (WHERE ttft_ms IS NULL)::float8 AS p99_ms,
      percentile_cont(0.5) WITHIN GROUP (ORDER BY ttft_ms)::float8 AS ttft_p50_ms,
      percentile_cont(0.95) WITHIN GROUP (ORDER BY ttft_ms)::float8 AS ttft_p95_ms
    FROM usage_events WHERE occurred_at >= ${since}
    GROUP BY 1 ORDER BY 1`,
  ];
}

/** One row of `errorsByCode`. */
export interface ErrorCount {
  error_code: string;
  provider: string | null;
  count: number;
}

/** Failed requests by error code (and provider), since a time. */
export async function errorsByCode(sql: Sql, since: Date) {
  return [
    ...await sql<ErrorCount[]>`
    SELECT error_code, provider, count(*)::int AS count FROM usage_events
    WHERE occurred_at >= ${since} AND NOT success
    GROUP BY error_code, provider ORDER BY count DESC, error_code`,
  ];
}

/** One day of one tenant's (or model's) spend, in `spendSeries`. */
export interface DaySpend {
  day: string;
  key: string;
  cost_usd: number;
  managed_cost_usd: number;
}

/** $/tenant/day and $/model/day from the rollups, managed and total. */
export async function spendSeries(sql: Sql, from: string) {
  const [tenants, models] = await Promise.all([
    sql<DaySpend[]>`
      SELECT day::text AS day, tenant_id AS key, cost_usd::float8 AS cost_usd,
        managed_cost_usd::float8 AS managed_cost_usd
      FROM usage_daily_tenant WHERE day >= ${from} ORDER BY day, tenant_id`,
    sql<DaySpend[]>`
      SELECT day::text AS day, model AS key, cost_usd::float8 AS cost_usd,
        managed_cost_usd::float8 AS managed_cost_usd
      FROM usage_daily_model WHERE day >= ${from} ORDER BY day, model`,
  ]);
  return { tenants: [...tenants], models: [...models] };
}

/** One user's row of `usageByUser`. */
export interface UserUsage {
  user_id: string;
  requests: number;
  input_tokens: number;
  output_tokens: number;
  tool_calls: number;
  audio_seconds: number;
  cost_usd: number;
}

/** One tenant's usage per user over [from, to] (UTC days), biggest spenders first. */
export async function usageByUser(sql: Sql, tenant: string, from: string, to: string) {
  return [
    ...await sql<UserUsage[]>`
    SELECT user_id, count(*)::int AS requests, sum(input_tokens)::float8 AS input_tokens,
      sum(output_tokens)::float8 AS output_tokens, sum(tool_calls_count)::float8 AS tool_calls,
      sum(audio_seconds_in + audio_seconds_out)::float8 AS audio_seconds,
      sum(cost_usd)::float8 AS cost_usd
    FROM usage_events
    WHERE tenant_id = ${tenant} AND occurred_at >= ${from}::date
      AND occurred_at < ${to}::date + 1
    GROUP BY user_id ORDER BY cost_usd DESC, user_id`,
  ];
}
