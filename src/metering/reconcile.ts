import type { BudgetStore, SpendScope } from "../budget/store.ts";
import { periodsAt, usdToMicro } from "../budget/store.ts";
import type { Clock } from "../clock.ts";
import type { Logger } from "../obs/log.ts";
import { signBody } from "./signature.ts";

export interface ReconcilerOptions {
  aggregatorUrl: string;
  secret: string;
  store: BudgetStore;
  clock: Clock;
  log: Logger;
  fetch?: (req: Request) => Promise<Response>;
}

interface Rollups {
  tenants: Array<{ tenant_id: string; day_usd: number; month_usd: number }>;
  global_day_usd: number;
}

/**
 * Corrects the fast-path spend counters from the ledger, the truth. A counter
 * below the ledger has lost spend (a Redis restart, an eviction, a failed
 * settlement's release) and is raised to it. A counter above the ledger is
 * left alone: the gap is reservations in flight and events still in edge
 * spools, which the ledger does not have yet, so lowering it would let a
 * tenant spend past its budget.
 */
export function createReconciler(opts: ReconcilerOptions) {
  const doFetch = opts.fetch ?? ((req: Request) => fetch(req));

  async function fetchRollups(day: string): Promise<Rollups> {
    const path = `/internal/metering/rollups?day=${day}`;
    const res = await doFetch(
      new Request(`${opts.aggregatorUrl.replace(/\/+$/, "")}${path}`, {
        headers: { "x-convergio-signature": await signBody(opts.secret, path, opts.clock.now()) },
        signal: AbortSignal.timeout(10_000),
      }),
    );
    if (!res.ok) {
      throw new Error(`rollups answered ${res.status}: ${(await res.text()).slice(0, 200)}`);
    }
    return await res.json();
  }

  /** One pass; returns how many counters were raised. */
  async function reconcile(): Promise<number> {
    const now = opts.clock.now();
    const periods = periodsAt(now);
    const rollups = await fetchRollups(new Date(now).toISOString().slice(0, 10));
    const targets: Array<[SpendScope, number]> = [
      [{ scope: "global", period: "day", bucket: periods.day }, rollups.global_day_usd],
    ];
    for (const t of rollups.tenants) {
      targets.push([
        { scope: "tenant", id: t.tenant_id, period: "day", bucket: periods.day },
        t.day_usd,
      ]);
      targets.push([
        { scope: "tenant", id: t.tenant_id, period: "month", bucket: periods.month },
        t.month_usd,
      ]);
    }
    const current = await opts.store.spend(targets.map(([scope]) => scope));
    let raised = 0;
    for (const [i, [scope, usd]] of targets.entries()) {
      const gap = usdToMicro(usd) - current[i];
      if (gap > 0) {
        await opts.store.correctSpend(scope, gap);
        raised++;
      }
    }
    if (raised) opts.log.warn("budget counters raised to the ledger", { counters: raised });
    return raised;
  }

  return { reconcile };
}

export type Reconciler = ReturnType<typeof createReconciler>;
