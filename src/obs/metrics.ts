import { Counter, Gauge, Registry } from "prom-client";

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
    // Metering: "queue depth + worker utilization" from the golden signals.
    spoolDepthEvents: new Gauge({
      name: "convergio_metering_spool_events",
      help: "Usage events waiting in the edge spool (batched, not yet acknowledged).",
      registers: [registry],
    }),
    spoolDepthBatches: new Gauge({
      name: "convergio_metering_spool_batches",
      help: "Batches waiting in the edge spool.",
      registers: [registry],
    }),
    spoolOldestAge: new Gauge({
      name: "convergio_metering_spool_oldest_age_seconds",
      help: "Age of the oldest unacknowledged batch.",
      registers: [registry],
    }),
    spoolDropped: new Counter({
      name: "convergio_metering_spool_dropped_events_total",
      help:
        "Usage events dropped because the spool bound was reached. Should stay 0; alert on any.",
      registers: [registry],
    }),
    senderSeconds: new Counter({
      name: "convergio_metering_sender_seconds_total",
      help:
        "Time the metering sender spent busy (sending) or idle; busy/(busy+idle) is utilization.",
      labelNames: ["state"] as const,
      registers: [registry],
    }),
    batchesSent: new Counter({
      name: "convergio_metering_batches_total",
      help: "Batch deliveries by outcome: acked, retry, rejected.",
      labelNames: ["outcome"] as const,
      registers: [registry],
    }),
    eventsRejected: new Counter({
      name: "convergio_metering_events_rejected_total",
      help: "Events the aggregator refused as invalid (kept in usage_events_rejected).",
      registers: [registry],
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
