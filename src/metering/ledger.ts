import type { Sql } from "../db/client.ts";

/** Usage totals of one tenant over a span of days, from the rollups. */
export interface UsageTotals {
  requests: number;
  errors: number;
  input_tokens: number;
  output_tokens: number;
  tool_calls: number;
  audio_seconds: number;
  cost_usd: number;
  managed_cost_usd: number;
}

/** First day of the UTC month of `day` ("YYYY-MM-DD"). */
export const monthStart = (day: string) => `${day.slice(0, 7)}-01`;

export async function tenantTotals(
  sql: Sql,
  tenant: string,
  from: string,
  to: string,
): Promise<UsageTotals> {
  const [row] = await sql`
    SELECT coalesce(sum(requests), 0)::float8 AS requests, coalesce(sum(errors), 0)::float8 AS errors,
      coalesce(sum(input_tokens), 0)::float8 AS input_tokens,
      coalesce(sum(output_tokens), 0)::float8 AS output_tokens,
      coalesce(sum(tool_calls), 0)::float8 AS tool_calls,
      coalesce(sum(audio_seconds), 0)::float8 AS audio_seconds,
      coalesce(sum(cost_usd), 0)::float8 AS cost_usd,
      coalesce(sum(managed_cost_usd), 0)::float8 AS managed_cost_usd
    FROM usage_daily_tenant WHERE tenant_id = ${tenant} AND day BETWEEN ${from} AND ${to}`;
  return row as unknown as UsageTotals;
}

/** Managed spend of every tenant with usage this month, for a day and its month to date. */
export async function monthSpendByTenant(sql: Sql, day: string) {
  return await sql<{ tenant_id: string; day_usd: number; month_usd: number }[]>`
    SELECT tenant_id,
      coalesce(sum(managed_cost_usd) FILTER (WHERE day = ${day}), 0)::float8 AS day_usd,
      sum(managed_cost_usd)::float8 AS month_usd
    FROM usage_daily_tenant WHERE day BETWEEN ${monthStart(day)} AND ${day}
    GROUP BY tenant_id`;
}

/** Managed spend per tenant for a day and its month, plus the day's global total: what reconciliation needs. */
export async function managedSpend(sql: Sql, day: string) {
  const rows = (await monthSpendByTenant(sql, day)).filter((r) => r.month_usd > 0);
  const global_day_usd = rows.reduce((sum, r) => sum + r.day_usd, 0);
  return { day, tenants: rows, global_day_usd };
}

export interface EventFilter {
  tenant_id?: string;
  user_id?: string;
  model?: string;
  success?: boolean;
  from?: string;
  to?: string;
  /** Keyset cursor: the (occurred_at, request_id) of the last row of the previous page. */
  after?: { occurred_at: string; request_id: string };
  limit: number;
}

/** Usage events, newest first, by keyset pagination so deep pages stay cheap. */
export async function listEvents(sql: Sql, f: EventFilter) {
  const rows = await sql`
    SELECT request_id, tenant_id, user_id, session_id, provider, model, input_tokens,
      output_tokens, tool_calls_count, audio_seconds_in, audio_seconds_out, latency_ms,
      success, error_code, mode, cost_usd::float8 AS cost_usd, occurred_at
    FROM usage_events
    WHERE true
      ${f.tenant_id ? sql`AND tenant_id = ${f.tenant_id}` : sql``}
      ${f.user_id ? sql`AND user_id = ${f.user_id}` : sql``}
      ${f.model ? sql`AND model = ${f.model}` : sql``}
      ${f.success === undefined ? sql`` : sql`AND success = ${f.success}`}
      ${f.from ? sql`AND occurred_at >= ${f.from}` : sql``}
      ${f.to ? sql`AND occurred_at < ${f.to}` : sql``}
      ${
    f.after
      ? sql`AND (occurred_at, request_id) < (${f.after.occurred_at}::timestamptz, ${f.after.request_id})`
      : sql``
  }
    ORDER BY occurred_at DESC, request_id DESC
    LIMIT ${f.limit}`;
  return rows.map((r) => ({
    ...r,
    request_id: r.request_id as string,
    occurred_at: (r.occurred_at as Date).toISOString(),
  }));
}

/** One tenant's month, per day and model: the rows of the billing CSV. */
export function billingRows(sql: Sql, tenant: string, month: string) {
  return sql<
    {
      day: string;
      model: string;
      mode: string;
      requests: number;
      input_tokens: number;
      output_tokens: number;
      tool_calls: number;
      audio_seconds: number;
      cost_usd: string;
    }[]
  >`
    SELECT to_char((occurred_at AT TIME ZONE 'UTC')::date, 'YYYY-MM-DD') AS day,
      coalesce(model, 'unknown') AS model, mode, count(*)::int AS requests,
      sum(input_tokens)::int AS input_tokens, sum(output_tokens)::int AS output_tokens,
      sum(tool_calls_count)::int AS tool_calls,
      sum(audio_seconds_in + audio_seconds_out)::float8 AS audio_seconds,
      sum(cost_usd)::text AS cost_usd
    FROM usage_events
    WHERE tenant_id = ${tenant}
      AND occurred_at >= (${`${month}-01`}::timestamp AT TIME ZONE 'UTC')
      AND occurred_at < ((${`${month}-01`}::timestamp + interval '1 month') AT TIME ZONE 'UTC')
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`;
}
