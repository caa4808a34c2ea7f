import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { TenantLabels } from "./tenant_labels.ts";

/** Request latency buckets, dense around the SLO thresholds (800 ms, 1.5 s). */
const LATENCY_BUCKETS = [
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.4,
  0.6,
  0.8,
  1,
  1.25,
  1.5,
  2,
  3,
  5,
  10,
  30,
];
/** The gateway's own overhead is small: sub-millisecond to a few hundred ms. */
const OVERHEAD_BUCKETS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];
/** OpenTelemetry's advised buckets for gen_ai.client.token.usage. */
const TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304];

/**
 * The process's Prometheus registry and the metrics the edge records. One
 * registry per app instance (no global default), so tests get clean counts.
 */
export function createMetrics(
  opts: { tenantLabelTopN?: number; now?: () => number; enabled?: boolean } = {},
) {
  const registry = new Registry();
  const labels = new TenantLabels(opts.tenantLabelTopN ?? 20, opts.now ?? Date.now);
  const metrics = {
    registry,
    /**
     * The bounded label for a tenant on per-tenant metrics (top N by today's
     * spend, else "other"); series of tenants that lost their place at a day's
     * rollover are removed.
     */
    tenantLabel(tenant: string, usd = 0): string {
      const { label, dropped } = labels.label(tenant, usd);
      for (const t of dropped) {
        metrics.tenantCost.remove({ tenant: t, lane: "managed" });
        metrics.tenantCost.remove({ tenant: t, lane: "byok" });
        metrics.budgetFraction.remove({ tenant: t });
      }
      return label;
    },
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
    // Traffic, errors, latency.
    httpRequests: new Counter({
      name: "convergio_http_requests_total",
      help: "HTTP requests by route pattern, method and status class (2xx, 4xx, 5xx).",
      labelNames: ["route", "method", "status_class"] as const,
      registers: [registry],
    }),
    httpDuration: new Histogram({
      name: "convergio_http_request_duration_seconds",
      help: "Whole-request latency, to the last byte (streams: to the end of the stream).",
      labelNames: ["route", "streaming"] as const,
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    overhead: new Histogram({
      name: "convergio_gateway_overhead_seconds",
      help: "The gateway's own time per request: whole latency minus time in provider calls.",
      labelNames: ["route"] as const,
      buckets: OVERHEAD_BUCKETS,
      registers: [registry],
    }),
    timeToFirstToken: new Histogram({
      name: "gen_ai_server_time_to_first_token_seconds",
      help: "Time from request to the first streamed token (OpenTelemetry GenAI).",
      labelNames: ["gen_ai_provider_name", "gen_ai_request_model", "transport"] as const,
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    operationDuration: new Histogram({
      name: "gen_ai_client_operation_duration_seconds",
      help: "Provider call duration (OpenTelemetry GenAI), failovers included.",
      labelNames: [
        "gen_ai_operation_name",
        "gen_ai_provider_name",
        "gen_ai_request_model",
        "error_type",
      ] as const,
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    tokenUsage: new Histogram({
      name: "gen_ai_client_token_usage",
      help: "Tokens per request by type, input or output (OpenTelemetry GenAI); _sum is the total.",
      labelNames: ["gen_ai_token_type", "gen_ai_provider_name", "gen_ai_request_model"] as const,
      buckets: TOKEN_BUCKETS,
      registers: [registry],
    }),
    toolCalls: new Counter({
      name: "convergio_tool_calls_total",
      help: "Tool calls returned by models.",
      labelNames: ["gen_ai_request_model"] as const,
      registers: [registry],
    }),
    // Providers and failover.
    providerAttempts: new Counter({
      name: "convergio_provider_attempts_total",
      help: "Provider call attempts by provider, deployment and outcome (ok, error).",
      labelNames: ["provider", "deployment", "outcome"] as const,
      registers: [registry],
    }),
    providerFailovers: new Counter({
      name: "convergio_provider_failovers_total",
      help: "Attempts that failed and moved the request on to another attempt.",
      labelNames: ["provider", "deployment"] as const,
      registers: [registry],
    }),
    // Cost: increase(...[1d]) gives $/tenant/day and $/model/day.
    tenantCost: new Counter({
      name: "convergio_tenant_cost_usd_total",
      help: "Cost in USD by tenant (top N by today's spend, the rest as other) and lane.",
      labelNames: ["tenant", "lane"] as const,
      registers: [registry],
    }),
    modelCost: new Counter({
      name: "convergio_model_cost_usd_total",
      help: "Cost in USD by model alias and lane.",
      labelNames: ["model", "lane"] as const,
      registers: [registry],
    }),
    // WebSocket sessions, chat and voice ("kind").
    wsConnect: new Histogram({
      name: "convergio_ws_connect_seconds",
      help: "WebSocket connect time, from the upgrade request to the session's ready frame.",
      labelNames: ["kind"] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2.5, 5],
      registers: [registry],
    }),
    wsSessions: new Counter({
      name: "convergio_ws_sessions_total",
      help: "WebSocket sessions started (new, not resumed).",
      labelNames: ["kind"] as const,
      registers: [registry],
    }),
    wsDropouts: new Counter({
      name: "convergio_ws_dropouts_total",
      help: "Abnormal WebSocket closes, by reason (the close code).",
      labelNames: ["kind", "reason"] as const,
      registers: [registry],
    }),
    wsReconnectAttempts: new Counter({
      name: "convergio_ws_reconnect_attempts_total",
      help: "Reconnects that asked to resume a session.",
      labelNames: ["kind"] as const,
      registers: [registry],
    }),
    wsReconnectSuccesses: new Counter({
      name: "convergio_ws_reconnect_successes_total",
      help: "Reconnects that resumed their session with no frame lost.",
      labelNames: ["kind"] as const,
      registers: [registry],
    }),
    audioSeconds: new Counter({
      name: "convergio_voice_audio_seconds_total",
      help: "Audio metered from sample counts, by direction (in, out).",
      labelNames: ["direction"] as const,
      registers: [registry],
    }),
    dbErrors: new Counter({
      name: "convergio_db_errors_total",
      help: "Ledger database operations that failed, by operation (RB-5).",
      labelNames: ["op"] as const,
      registers: [registry],
    }),
    controlSyncs: new Counter({
      name: "convergio_control_syncs_total",
      help: "Edge polls of the control snapshot, by outcome (updated, not_modified, error).",
      labelNames: ["outcome"] as const,
      registers: [registry],
    }),
    mitigationChanges: new Counter({
      name: "convergio_mitigation_changes_total",
      help: "Runbook mitigations applied or reverted, by name, action and actor kind.",
      labelNames: ["mitigation", "action", "actor"] as const,
      registers: [registry],
    }),
    toolDenials: new Counter({
      name: "convergio_tool_denials_total",
      help: "Tools refused by a tenant's allow-list or plugin permissions, by direction.",
      labelNames: ["direction"] as const,
      registers: [registry],
    }),
    // Saturation: the process's memory, read at scrape time.
    memory: new Gauge({
      name: "convergio_process_memory_bytes",
      help: "Process memory: rss, and the JS heap's total (reserved) and used bytes, and external.",
      labelNames: ["kind"] as const,
      registers: [registry],
      collect() {
        const m = Deno.memoryUsage();
        this.set({ kind: "rss" }, m.rss);
        this.set({ kind: "heap_total" }, m.heapTotal);
        this.set({ kind: "heap_used" }, m.heapUsed);
        this.set({ kind: "external" }, m.external);
      },
    }),
    budgetFraction: new Gauge({
      name: "convergio_budget_fraction_used",
      help:
        "Highest fraction of a managed budget used at the tenant's last request (top N tenants).",
      labelNames: ["tenant"] as const,
      registers: [registry],
    }),
  };
  if (opts.enabled === false) disable(metrics);
  return metrics;
}

const NOOP = () => {};

/**
 * Observability off: every metric keeps its type but records nothing and
 * leaves the registry, so the hot path pays for no label hashing at all.
 */
function disable(metrics: Record<string, unknown> & { registry: Registry }) {
  metrics.registry.clear();
  for (const value of Object.values(metrics)) {
    if (value instanceof Counter || value instanceof Gauge || value instanceof Histogram) {
      Object.assign(value, { inc: NOOP, set: NOOP, observe: NOOP, remove: NOOP });
    }
  }
}

export type Metrics = ReturnType<typeof createMetrics>;
