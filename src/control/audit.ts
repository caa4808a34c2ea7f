import { z } from "zod";
import { sha256Hex } from "../auth/hex.ts";
import type { Sql } from "../db/client.ts";

/** One admin action, as the caller describes it; the chain fields are added on append. */
export const AuditEntrySchema = z.object({
  actor: z.string().min(1),
  actor_tenant: z.string().nullable(),
  action: z.string().min(1),
  target: z.string().min(1),
  before: z.unknown().nullable(),
  after: z.unknown().nullable(),
  request_id: z.string().nullable(),
  reason: z.string().nullable(),
});
export type AuditEntry = z.infer<typeof AuditEntrySchema>;

export interface AuditRow extends AuditEntry {
  id: number;
  at: string;
  prev_hash: string;
  hash: string;
}

const GENESIS = "0".repeat(64);
/** Every appender takes this transaction lock, so the chain never forks. */
const CHAIN_LOCK = 7_204_332;

/** JSON with sorted keys: jsonb does not keep key order, and the hash must survive a round trip. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value && typeof value === "object") {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value ?? null);
}

async function rowHash(prev: string, at: string, e: AuditEntry): Promise<string> {
  const text = canonicalJson([
    prev,
    at,
    e.actor,
    e.actor_tenant,
    e.action,
    e.target,
    e.before ?? null,
    e.after ?? null,
    e.request_id,
    e.reason,
  ]);
  return await sha256Hex(text);
}

/**
 * Appends one entry inside the caller's transaction, so an action and its
 * audit row commit together or not at all.
 */
export async function appendAudit(tx: Sql, entry: AuditEntry, now: number): Promise<AuditRow> {
  await tx`SELECT pg_advisory_xact_lock(${CHAIN_LOCK})`;
  const [last] = await tx<{ hash: string }[]>`SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1`;
  const prev = last?.hash ?? GENESIS;
  const at = new Date(now).toISOString();
  const hash = await rowHash(prev, at, entry);
  const json = (v: unknown) => (v === null || v === undefined ? null : tx.json(v as never));
  const [row] = await tx<{ id: string }[]>`
    INSERT INTO audit_log (at, actor, actor_tenant, action, target, before, after, request_id,
      reason, prev_hash, hash)
    VALUES (${at}, ${entry.actor}, ${entry.actor_tenant}, ${entry.action}, ${entry.target},
      ${json(entry.before)}, ${json(entry.after)}, ${entry.request_id}, ${entry.reason},
      ${prev}, ${hash})
    RETURNING id`;
  return { ...entry, id: Number(row.id), at, prev_hash: prev, hash };
}

interface StoredRow extends Omit<AuditRow, "id" | "at"> {
  id: string;
  at: Date;
}

function fromStored(r: StoredRow): AuditRow {
  return { ...r, id: Number(r.id), at: r.at.toISOString() };
}

export const AuditQuerySchema = z.strictObject({
  actor: z.string().min(1).optional(),
  action: z.string().min(1).optional(),
  target: z.string().min(1).optional(),
  tenant: z.string().min(1).optional(),
  since: z.iso.datetime({ offset: true }).optional(),
  until: z.iso.datetime({ offset: true }).optional(),
  /** Rows with an id below this one: pages backwards from the newest. */
  before_id: z.coerce.number().int().positive().optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});
export type AuditQuery = z.infer<typeof AuditQuerySchema>;

/** Newest first. `tenant` matches rows whose actor or target belongs to that tenant. */
export async function queryAudit(sql: Sql, q: AuditQuery): Promise<AuditRow[]> {
  const rows = await sql<StoredRow[]>`
    SELECT id, at, actor, actor_tenant, action, target, before, after, request_id, reason,
      prev_hash, hash
    FROM audit_log
    WHERE (${q.actor ?? null}::text IS NULL OR actor = ${q.actor ?? null})
      AND (${q.action ?? null}::text IS NULL OR starts_with(action, ${q.action ?? ""}))
      AND (${q.target ?? null}::text IS NULL OR target = ${q.target ?? null})
      AND (${q.tenant ?? null}::text IS NULL OR actor_tenant = ${q.tenant ?? null}
        OR target = 'tenant:' || ${q.tenant ?? ""})
      AND (${q.since ?? null}::timestamptz IS NULL OR at >= ${q.since ?? null})
      AND (${q.until ?? null}::timestamptz IS NULL OR at < ${q.until ?? null})
      AND (${q.before_id ?? null}::bigint IS NULL OR id < ${q.before_id ?? null})
    ORDER BY id DESC
    LIMIT ${q.limit}`;
  return rows.map(fromStored);
}

export interface AuditVerdict {
  ok: boolean;
  rows: number;
  /** The first row whose link or content does not check out. */
  broken?: { id: number; reason: "content" | "link" };
  /**
   * Hash of the newest row. Only a copy kept elsewhere shows a truncated tail,
   * so operators record it.
   */
  head?: string;
}

/**
 * Recomputes the chain from the first row. An edited row fails its own hash;
 * a deleted or reordered one breaks the next row's link.
 */
export async function verifyAudit(sql: Sql, pageSize = 1000): Promise<AuditVerdict> {
  let prev = GENESIS;
  let lastId = 0;
  let rows = 0;
  while (true) {
    const page = (await sql<StoredRow[]>`
      SELECT id, at, actor, actor_tenant, action, target, before, after, request_id, reason,
        prev_hash, hash
      FROM audit_log WHERE id > ${lastId} ORDER BY id LIMIT ${pageSize}`).map(fromStored);
    for (const r of page) {
      if (r.prev_hash !== prev) return { ok: false, rows, broken: { id: r.id, reason: "link" } };
      if (await rowHash(prev, r.at, r) !== r.hash) {
        return { ok: false, rows, broken: { id: r.id, reason: "content" } };
      }
      prev = r.hash;
      lastId = r.id;
      rows++;
    }
    if (page.length < pageSize) break;
  }
  return { ok: true, rows, head: rows ? prev : undefined };
}
