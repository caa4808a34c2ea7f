import { Gauge, type Registry } from "prom-client";
import type { Clock } from "../clock.ts";
import { type BudgetStore, periodsAt } from "./store.ts";

/**
 * Today's managed-lane spend (from the shared store, so every edge reports
 * the same global figure) beside the global daily cap: RB-3 compares them.
 */
export function registerSpendGauges(
  registry: Registry,
  store: BudgetStore,
  capUsd: number,
  clock: Clock,
): void {
  new Gauge({
    name: "convergio_managed_spend_today_usd",
    help: "Managed-lane spend so far this UTC day, all tenants, from the budget store.",
    registers: [registry],
    async collect(this: Gauge) {
      try {
        const [micro] = await store.spend([
          { scope: "global", period: "day", bucket: periodsAt(clock.now()).day },
        ]);
        this.set(micro / 1e6);
      } catch {
        // Store down: the gauge keeps its last value; the store-error metric says why.
      }
    },
  });
  new Gauge({
    name: "convergio_managed_daily_cap_usd",
    help: "The managed lane's global daily spend cap (0 = no cap).",
    registers: [registry],
  }).set(capUsd);
}
