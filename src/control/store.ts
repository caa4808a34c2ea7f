import { encodeHex } from "../auth/hex.ts";
import type { Clock } from "../clock.ts";
import type { Sql } from "../db/client.ts";
import type { Logger } from "../obs/log.ts";
import { appendAudit, type AuditEntry, canonicalJson } from "./audit.ts";
import { type DbHealth, readOnlyError } from "./db_health.ts";
import type { FlagState } from "./flags.ts";
import type { MitigationState } from "./mitigations.ts";
import { type ControlSnapshot, ControlSnapshotSchema } from "./snapshot.ts";

/** Who is acting, for the audit log. */
export interface Actor {
  actor: string;
  actor_tenant: string | null;
  request_id: string | null;
}

/** One audited change: what it did, for the log, and what it returns. */
export interface Change<T> {
  before: unknown;
  after: unknown;
  result: T;
  /** The target, when only the change itself finds out what it acts on. */
  target?: string;
  /** Nothing changed: no audit row. */
  noop?: boolean;
}

export interface ControlStoreDeps {
  sql: Sql;
  clock: Clock;
  log: Logger;
  health: DbHealth;
  /** How long a built snapshot is served before the database is read again. */
  cacheMs: number;
}

const iso = (d: Date | string) => (typeof d === "string" ? d : d.toISOString());

async function readSnapshot(sql: Sql): Promise<Omit<ControlSnapshot, "version">> {
  const [flags, mitigations, tenants, plans, models, overrides, plugins, byok] = await Promise.all([
    sql`SELECT name, default_value, overrides, canary_percent, canary_value, killed FROM flags`,
    sql`SELECT name, params, actor, reason, sources, activated_at FROM mitigations`,
    sql`SELECT id, type, plan, limits, downgrade_model, retention_months, tools, created_at
        FROM tenants`,
    sql`SELECT name, limits FROM plans`,
    sql`SELECT alias, price, deployments FROM model_overrides`,
    sql`SELECT tenant_id, reason, by_user, expires_at FROM budget_overrides
        WHERE expires_at > now()`,
    sql`SELECT name, version, description, tools, permissions, status FROM plugins ORDER BY name`,
    sql`SELECT tenant_id, provider, key_ref, envelope, updated_at FROM byok_keys
        ORDER BY tenant_id, provider`,
  ]);
  return {
    flags: Object.fromEntries(flags.map((f): [string, FlagState] => [f.name, {
      default: f.default_value,
      overrides: f.overrides,
      canary: f.canary_percent > 0 ? { percent: f.canary_percent, value: f.canary_value } : null,
      killed: f.killed,
    }])),
    mitigations: Object.fromEntries(mitigations.map((m): [string, MitigationState] => [m.name, {
      params: m.params,
      actor: m.actor,
      reason: m.reason,
      sources: m.sources,
      since: iso(m.activated_at),
    }])),
    tenants: Object.fromEntries(tenants.map((t) => [t.id, {
      type: t.type,
      plan: t.plan,
      limits: t.limits,
      downgrade_model: t.downgrade_model,
      retention_months: t.retention_months,
      tools: t.tools,
      created_at: iso(t.created_at),
    }])),
    plans: Object.fromEntries(plans.map((p) => [p.name, p.limits])),
    models: Object.fromEntries(
      models.map((m) => [m.alias, { price: m.price, deployments: m.deployments }]),
    ),
    budget_overrides: overrides.map((o) => ({
      tenant_id: o.tenant_id,
      reason: o.reason,
      by: o.by_user,
      expires_at: new Date(o.expires_at).getTime(),
    })),
    plugins: plugins.map((p) => ({ ...p })),
    byok: byok.map((k) => ({ ...k, updated_at: iso(k.updated_at) })),
  } as Omit<ControlSnapshot, "version">;
}

/**
 * The aggregator's side of the control plane: every admin change runs here in
 * one transaction with its audit row, and the snapshot edges poll is built
 * from the tables and cached, so reads outlive a database outage.
 */
export function createControlStore(deps: ControlStoreDeps) {
  const { sql, clock, log, health } = deps;
  /** After a change it stays as the fallback, expired, until the rebuild succeeds. */
  let cached: { snapshot: ControlSnapshot; at: number } | undefined;
  let building: Promise<ControlSnapshot> | undefined;
  const listeners: Array<() => Promise<unknown>> = [];

  async function build(): Promise<ControlSnapshot> {
    const body = await health.run("control_read", () => readSnapshot(sql));
    const digest = await crypto.subtle.digest(
      "SHA-256",
      new TextEncoder().encode(canonicalJson(body)),
    );
    const snapshot = ControlSnapshotSchema.parse({
      ...body,
      version: encodeHex(new Uint8Array(digest)).slice(0, 32),
    });
    cached = { snapshot, at: clock.now() };
    return snapshot;
  }

  /** The current snapshot; the last good one while the database is down. */
  async function snapshot(): Promise<ControlSnapshot> {
    if (cached && (health.down || clock.now() - cached.at < deps.cacheMs)) return cached.snapshot;
    building ??= build().finally(() => (building = undefined));
    try {
      return await building;
    } catch (err) {
      if (cached) return cached.snapshot;
      throw err;
    }
  }

  /**
   * Runs one admin change and its audit entry in a transaction. Refused with
   * `db.read_only` while the database is down, or, except for mitigations
   * (so that it can be lifted), while the read_only mitigation is on.
   */
  async function change<T>(
    who: Actor,
    what: { action: string; target: string; reason?: string | null },
    fn: (tx: Sql) => Promise<Change<T>>,
  ): Promise<T> {
    if (!what.action.startsWith("mitigation.")) {
      if ((await snapshot()).mitigations.read_only) {
        throw readOnlyError("the read_only mitigation is on; admin writes are refused");
      }
    }
    const c = await health.run("control_write", () =>
      sql.begin(async (tx) => {
        const c = await fn(tx as unknown as Sql);
        if (c.noop) return c;
        const entry: AuditEntry = {
          ...who,
          action: what.action,
          target: c.target ?? what.target,
          reason: what.reason ?? null,
          before: c.before ?? null,
          after: c.after ?? null,
        };
        await appendAudit(tx as unknown as Sql, entry, clock.now());
        return c;
      }) as Promise<Change<T>>);
    // Nothing changed: no audit row, and no snapshot for the edges to rebuild.
    if (c.noop) return c.result;
    if (cached) cached.at = -Infinity;
    log.warn("admin change", { ...who, action: what.action, target: what.target });
    for (const l of listeners) await l();
    return c.result;
  }

  /** Appends an entry that changes nothing (a tool denial seen by an edge). */
  async function record(entry: AuditEntry): Promise<void> {
    await health.run(
      "audit_write",
      () => sql.begin((tx) => appendAudit(tx as unknown as Sql, entry, clock.now())),
    );
  }

  return {
    snapshot,
    change,
    record,
    /** Awaited after every change: in one process, the local edge has it when the call returns. */
    onChange(listener: () => Promise<unknown>) {
      listeners.push(listener);
    },
  };
}

export type ControlStore = ReturnType<typeof createControlStore>;
