import { Counter, Registry } from "prom-client";

/**
 * The process's Prometheus registry and the metrics the edge records. One
 * registry per app instance (no global default), so tests get clean counts.
 */
export function createMetrics() {
  const registry = new Registry();
  return {
    registry,
    guardrailActions: new Counter({
      name: "convergio_guardrail_actions_total",
      help: "Guardrail actions taken: alert, downgrade, block, global_cap, rate_limit.",
      labelNames: ["action", "lane"] as const,
      registers: [registry],
    }),
    budgetStoreErrors: new Counter({
      name: "convergio_budget_store_errors_total",
      help: "Budget store calls that failed (store unreachable or timed out), by outcome policy.",
      labelNames: ["op", "lane", "policy"] as const,
      registers: [registry],
    }),
    alertDeliveries: new Counter({
      name: "convergio_budget_alert_webhook_total",
      help: "Budget alert webhook deliveries by outcome: delivered, retried, failed.",
      labelNames: ["outcome"] as const,
      registers: [registry],
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
