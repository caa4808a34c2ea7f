import type { BudgetStore } from "../budget/store.ts";
import type { Clock } from "../clock.ts";
import { signBody } from "../metering/signature.ts";
import type { Logger } from "../obs/log.ts";
import type { Metrics } from "../obs/metrics.ts";
import type { AuditEntry } from "./audit.ts";
import { type ControlSnapshot, ControlSnapshotSchema } from "./snapshot.ts";
import type { ControlView } from "./view.ts";
import type { KeyStore } from "../keys/keystore.ts";
import { Secret } from "../secret.ts";

export interface ControlSyncDeps {
  aggregatorUrl: string;
  secret: string;
  view: ControlView;
  store: BudgetStore;
  clock: Clock;
  log: Logger;
  metrics: Metrics;
  fetch?: (req: Request) => Promise<Response>;
  /** Audit entries waiting for the aggregator; the oldest go first past this. */
  maxPendingAudit?: number;
  /** Opens the tenants' provider keys the snapshot names. */
  keys?: KeyStore;
}

type Overrides = ControlSnapshot["budget_overrides"];

/**
 * Keeps an edge's ControlView current: polls the aggregator's snapshot with
 * its version as ETag (a 304 costs nothing), keeps the last good copy when
 * the aggregator is unreachable, mirrors budget overrides into the budget
 * store, and delivers the edge's own audit entries (tool denials, autopilot).
 */
export function createControlSync(deps: ControlSyncDeps) {
  const { view, clock, log, metrics } = deps;
  const doFetch = deps.fetch ?? ((req: Request) => fetch(req));
  const base = deps.aggregatorUrl.replace(/\/+$/, "");
  const pendingAudit: AuditEntry[] = [];
  const maxPending = deps.maxPendingAudit ?? 10_000;
  let applied: Overrides = [];
  /** Opened keys by reference and envelope, so an unchanged key is not opened again. */
  let opened = new Map<string, Secret>();
  /** Keys the last snapshot named but that could not be opened: retried on every poll. */
  let unopened = 0;

  /** A key that cannot be opened is left out: its tenant gets byok.missing_key, not a crash. */
  async function openKeys(byok: ControlSnapshot["byok"]) {
    const next = new Map<string, Secret>();
    unopened = 0;
    const out: Record<string, Record<string, Secret>> = {};
    for (const k of byok) {
      const id = `${k.key_ref}|${k.updated_at}|${k.envelope?.wrapped_key ?? ""}`;
      let secret = opened.get(id);
      if (!secret && deps.keys) {
        try {
          secret = new Secret(await deps.keys.load(k.key_ref, k.envelope));
        } catch (err) {
          log.error("byok key could not be opened", {
            tenant_id: k.tenant_id,
            provider: k.provider,
            key_ref: k.key_ref,
            error: (err as Error).message,
          });
        }
      }
      if (!secret) {
        unopened++;
        continue;
      }
      next.set(id, secret);
      (out[k.tenant_id] ??= {})[k.provider] = secret;
    }
    opened = next;
    return out;
  }

  async function signed(path: string, body?: string, headers: Record<string, string> = {}) {
    return await doFetch(
      new Request(`${base}${path}`, {
        method: body === undefined ? "GET" : "POST",
        body,
        headers: {
          ...headers,
          "content-type": "application/json",
          "x-convergio-signature": await signBody(deps.secret, body ?? path, clock.now()),
        },
        signal: AbortSignal.timeout(5_000),
      }),
    );
  }

  async function syncOverrides(next: Overrides) {
    const key = (o: Overrides[number]) => `${o.tenant_id}|${o.expires_at}|${o.reason}`;
    const had = new Set(applied.map(key));
    for (const o of next) if (!had.has(key(o))) await deps.store.setOverride({ ...o });
    const still = new Set(next.map((o) => o.tenant_id));
    for (const o of applied) {
      if (!still.has(o.tenant_id)) await deps.store.clearOverride(o.tenant_id);
    }
    applied = next;
  }

  /** One poll; true when a new snapshot was applied. Never throws. */
  async function refresh(): Promise<boolean> {
    try {
      const res = await signed(
        "/internal/control/snapshot",
        undefined,
        unopened ? {} : { "if-none-match": `"${view.version}"` },
      );
      if (res.status === 304) {
        await res.body?.cancel();
        metrics.controlSyncs.inc({ outcome: "not_modified" });
        return false;
      }
      if (!res.ok) throw new Error(`snapshot answered ${res.status}`);
      const snapshot = ControlSnapshotSchema.parse(await res.json());
      // Overrides first: if the store fails, the view stays behind and the next poll retries both.
      await syncOverrides(snapshot.budget_overrides);
      view.apply(snapshot, await openKeys(snapshot.byok));
      metrics.controlSyncs.inc({ outcome: "updated" });
      return true;
    } catch (err) {
      metrics.controlSyncs.inc({ outcome: "error" });
      log.warn("control sync failed; keeping the last good snapshot", {
        version: view.version,
        error: (err as Error).message,
      });
      return false;
    } finally {
      await flushAudit();
    }
  }

  function dropOldest() {
    if (pendingAudit.length <= maxPending) return;
    const lost = pendingAudit.splice(0, pendingAudit.length - maxPending);
    log.error("audit entries dropped: aggregator unreachable too long", { dropped: lost.length });
  }

  async function flushAudit(): Promise<void> {
    if (!pendingAudit.length) return;
    const batch = pendingAudit.splice(0, 500);
    try {
      const res = await signed("/internal/control/audit", JSON.stringify({ entries: batch }));
      await res.body?.cancel();
      if (!res.ok) throw new Error(`audit answered ${res.status}`);
    } catch (err) {
      pendingAudit.unshift(...batch);
      dropOldest();
      log.warn("audit delivery deferred", {
        pending: pendingAudit.length,
        error: (err as Error).message,
      });
    }
  }

  return {
    refresh,
    flushAudit,
    /** Queues an audit entry for the aggregator; delivered with the next poll. */
    audit(entry: AuditEntry): void {
      pendingAudit.push(entry);
      dropOldest();
    },
    pendingAudit: () => pendingAudit.length,
  };
}

export type ControlSync = ReturnType<typeof createControlSync>;
