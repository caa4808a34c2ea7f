import { encodeHex, sha256Hex } from "../auth/hex.ts";
import type { Sql } from "../db/client.ts";

/** Usage-event retention of consumers and schools (and tenants with no row). */
export const NON_BUSINESS_RETENTION_MONTHS = 24;

/**
 * Retention: deletes usage events older than the tenant type's window, 24
 * months for consumers and schools, the tenant's own (or the default) for
 * businesses. Tenants not in the tenants table count as consumers. Rollups
 * keep only aggregates and stay.
 */
export async function applyRetention(sql: Sql, businessMonths: number): Promise<number> {
  const deleted = await sql`
    DELETE FROM usage_events e
    WHERE e.occurred_at < now() - make_interval(months => coalesce(
      (SELECT CASE WHEN t.type = 'business' THEN coalesce(t.retention_months, ${businessMonths})
              ELSE ${NON_BUSINESS_RETENTION_MONTHS}::int END
       FROM tenants t WHERE t.id = e.tenant_id), ${NON_BUSINESS_RETENTION_MONTHS}::int))`;
  return deleted.count;
}

/**
 * Deleting a user: their usage rows stay for billing but no longer name them.
 * The pseudonym is a keyed hash, so it is stable (totals still add up) and
 * cannot be reversed without the key.
 */
export async function pseudonymiseUser(
  sql: Sql,
  tenant: string,
  user: string,
  key: string,
): Promise<{ pseudonym: string; rows: number }> {
  const mac = await crypto.subtle.sign(
    "HMAC",
    await crypto.subtle.importKey(
      "raw",
      new TextEncoder().encode(key),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign"],
    ),
    new TextEncoder().encode(`${tenant}\u0000${user}`),
  );
  const pseudonym = `anon_${encodeHex(new Uint8Array(mac)).slice(0, 24)}`;
  const rows = await sql.begin(async (tx) => {
    const updated = await tx`
      UPDATE usage_events SET user_id = ${pseudonym}, session_id = NULL
      WHERE tenant_id = ${tenant} AND user_id = ${user}`;
    await tx`UPDATE api_keys SET revoked_at = now()
      WHERE tenant_id = ${tenant} AND user_id = ${user} AND revoked_at IS NULL`;
    await tx`
      INSERT INTO users (tenant_id, id, deleted_at) VALUES (${tenant}, ${pseudonym}, now())
      ON CONFLICT (tenant_id, id) DO UPDATE SET deleted_at = now()`;
    await tx`DELETE FROM users WHERE tenant_id = ${tenant} AND id = ${user}`;
    return updated.count;
  });
  return { pseudonym, rows };
}

const CSV_COLUMNS = [
  "request_id",
  "tenant_id",
  "user_id",
  "session_id",
  "provider",
  "model",
  "input_tokens",
  "output_tokens",
  "tool_calls_count",
  "audio_seconds_in",
  "audio_seconds_out",
  "latency_ms",
  "success",
  "error_code",
  "mode",
  "cost_usd",
  "occurred_at",
] as const;

/** RFC 4180 quoting, and a leading quote for cells a spreadsheet would run as a formula. */
export function csvCell(value: unknown): string {
  if (value === null || value === undefined) return "";
  let text = value instanceof Date ? value.toISOString() : String(value);
  if (/^[=+\-@\t\r]/.test(text) && typeof value === "string") text = `'${text}`;
  return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** A tenant's or one user's events as JSONL or CSV, with the body's SHA-256. */
export async function exportEvents(
  sql: Sql,
  tenant: string,
  user: string | undefined,
  format: "jsonl" | "csv",
): Promise<{ body: string; sha256: string; rows: number }> {
  const rows = await sql`
    SELECT ${sql(CSV_COLUMNS as unknown as string[])} FROM usage_events
    WHERE tenant_id = ${tenant} ${user ? sql`AND user_id = ${user}` : sql``}
    ORDER BY occurred_at, request_id`;
  const records = rows.map((r): Record<string, unknown> => ({
    ...r,
    cost_usd: Number(r.cost_usd),
    occurred_at: (r.occurred_at as Date).toISOString(),
  }));
  const body = format === "jsonl" ? records.map((r) => JSON.stringify(r) + "\n").join("") : [
    CSV_COLUMNS.join(","),
    ...records.map((r) => CSV_COLUMNS.map((c) => csvCell(r[c])).join(",")),
  ]
    .join("\n") + "\n";
  return { body, sha256: await sha256Hex(body), rows: records.length };
}
