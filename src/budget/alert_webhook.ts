import type { Logger } from "../obs/log.ts";
import type { Metrics } from "../obs/metrics.ts";
import { sleep } from "../providers/sleep.ts";

export interface BudgetAlert {
  type: "budget.alert";
  tenant_id: string;
  period: "day" | "month";
  bucket: string;
  fraction: number;
  threshold: number;
  at: string;
}

export interface AlertWebhookOptions {
  url?: string;
  log: Logger;
  metrics: Metrics;
  attempts?: number;
  backoffMs?: number;
  fetch?: typeof fetch;
}

/**
 * Delivers budget alerts to an optional webhook in the background, retrying
 * with jittered exponential backoff. Requests never wait for it; shutdown
 * waits for `idle()`.
 */
export function createAlertWebhook(opts: AlertWebhookOptions) {
  const attempts = opts.attempts ?? 5;
  const backoffMs = opts.backoffMs ?? 500;
  const doFetch = opts.fetch ?? fetch;
  const pending = new Set<Promise<void>>();

  async function deliver(url: string, alert: BudgetAlert) {
    for (let i = 1; i <= attempts; i++) {
      try {
        const res = await doFetch(url, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(alert),
          signal: AbortSignal.timeout(5_000),
        });
        await res.body?.cancel();
        if (res.ok) {
          opts.metrics.alertDeliveries.inc({ outcome: "delivered" });
          return;
        }
      } catch {
        // Network failure: retried like a non-2xx answer.
      }
      if (i < attempts) {
        opts.metrics.alertDeliveries.inc({ outcome: "retried" });
        await sleep(backoffMs * 2 ** (i - 1) * (0.5 + Math.random() / 2));
      }
    }
    opts.metrics.alertDeliveries.inc({ outcome: "failed" });
    opts.log.error("budget alert webhook failed", { tenant_id: alert.tenant_id, attempts });
  }

  return {
    send(alert: BudgetAlert): void {
      if (!opts.url) return;
      const p = deliver(opts.url, alert).finally(() => pending.delete(p));
      pending.add(p);
    },
    async idle(): Promise<void> {
      while (pending.size) await Promise.all(pending);
    },
  };
}

export type AlertWebhook = ReturnType<typeof createAlertWebhook>;
