import type { Clock } from "../clock.ts";
import type { Logger } from "../obs/log.ts";
import type { Metrics } from "../obs/metrics.ts";
import { sleep } from "../providers/sleep.ts";
import type { IngestResult } from "./ingest.ts";
import { signBody } from "./signature.ts";
import type { Spool } from "./spool.ts";
import type { UsageEvent } from "./usage_event.ts";

export interface BatcherOptions {
  /** The aggregator's base URL; batches go to `/internal/metering/batches`. */
  aggregatorUrl: string;
  secret: string;
  edgeId: string;
  batchSize: number;
  flushIntervalMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
  spool: Spool;
  clock: Clock;
  log: Logger;
  metrics: Metrics;
  random?: () => number;
  /** How requests reach the aggregator; the network by default. */
  fetch?: (req: Request) => Promise<Response>;
}

/**
 * Collects usage events into batches (by size or time), spools them, and
 * delivers them in order to the aggregator, signed, retrying with jittered
 * exponential backoff until acknowledged. The aggregator dedupes by
 * request_id, so redelivery after an ambiguous failure is safe.
 */
export function createBatcher(opts: BatcherOptions) {
  const { spool, log, metrics, clock } = opts;
  const random = opts.random ?? Math.random;
  const doFetch = opts.fetch ?? ((req: Request) => fetch(req));
  const endpoint = `${opts.aggregatorUrl.replace(/\/+$/, "")}/internal/metering/batches`;
  let buffer: UsageEvent[] = [];
  let running: Promise<void> | undefined;
  let stopping = false;
  // Cuts a retry backoff short at shutdown. New batches do not: while the
  // aggregator is down they must not turn into a retry storm.
  const shutdown = new AbortController();

  function kick() {
    if (!running) running = sendLoop().finally(() => (running = undefined));
  }

  function flush(): void {
    if (buffer.length === 0) return;
    const events = buffer;
    buffer = [];
    spool.push({ batch_id: crypto.randomUUID(), created_at: clock.now(), events });
    kick();
  }

  const timer = setInterval(flush, opts.flushIntervalMs);
  // Batches replayed from the journal go out now, not with the next traffic.
  if (spool.peek()) queueMicrotask(kick);

  /** One delivery attempt: true when the aggregator has the batch. */
  async function deliver(batch: { batch_id: string; events: UsageEvent[] }): Promise<boolean> {
    const body = JSON.stringify({
      batch_id: batch.batch_id,
      edge_id: opts.edgeId,
      events: batch.events,
    });
    const started = performance.now();
    try {
      const res = await doFetch(
        new Request(endpoint, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            "x-convergio-signature": await signBody(opts.secret, body, clock.now()),
          },
          body,
          signal: AbortSignal.any([AbortSignal.timeout(10_000), shutdown.signal]),
        }),
      );
      if (res.ok) {
        const result = await res.json() as IngestResult;
        metrics.batchesSent.inc({ outcome: "acked" });
        if (result.rejected.length) {
          metrics.eventsRejected.inc(result.rejected.length);
          log.error("metering: aggregator rejected events", {
            batch_id: batch.batch_id,
            rejected: result.rejected,
          });
        }
        return true;
      }
      const text = await res.text();
      if (res.status === 400) {
        // The whole batch is malformed: retrying cannot help. The aggregator
        // has logged it; keep a loud trace here too.
        metrics.batchesSent.inc({ outcome: "rejected" });
        log.error("metering: aggregator refused a malformed batch", {
          batch_id: batch.batch_id,
          reason: text.slice(0, 500),
        });
        return true;
      }
      metrics.batchesSent.inc({ outcome: "retry" });
      log.warn("metering: delivery failed, will retry", {
        batch_id: batch.batch_id,
        status: res.status,
      });
      return false;
    } catch (err) {
      metrics.batchesSent.inc({ outcome: "retry" });
      log.warn("metering: aggregator unreachable, will retry", {
        batch_id: batch.batch_id,
        error: (err as Error).message,
      });
      return false;
    } finally {
      metrics.senderSeconds.inc({ state: "busy" }, (performance.now() - started) / 1000);
    }
  }

  async function idleFor(ms: number) {
    const started = performance.now();
    await sleep(ms, shutdown.signal).catch(() => {});
    metrics.senderSeconds.inc({ state: "idle" }, (performance.now() - started) / 1000);
  }

  async function sendLoop() {
    let failures = 0;
    while (true) {
      const batch = spool.peek();
      spool.observe();
      if (!batch) return;
      if (await deliver(batch)) {
        spool.ack(batch.batch_id);
        failures = 0;
        continue;
      }
      failures++;
      if (stopping) return;
      const backoff = Math.min(opts.retryMaxMs, opts.retryBaseMs * 2 ** (failures - 1));
      await idleFor(backoff * (0.5 + random() / 2));
      if (stopping) return;
    }
  }

  return {
    add(event: UsageEvent): void {
      buffer.push(event);
      if (buffer.length >= opts.batchSize) flush();
    },
    flush,
    /** Events buffered, not yet in a batch. */
    get buffered(): number {
      return buffer.length;
    },
    /** Resolves once every spooled batch is acknowledged. */
    async drain(): Promise<void> {
      flush();
      kick();
      await running;
    },
    /**
     * Graceful shutdown: flush, keep delivering until the spool is empty or
     * `deadlineMs` passes. What is left stays in the file journal, if any,
     * for the next start.
     */
    async close(deadlineMs: number): Promise<void> {
      clearInterval(timer);
      flush();
      const giveUp = setTimeout(() => {
        stopping = true;
        shutdown.abort();
      }, deadlineMs);
      kick();
      await running;
      clearTimeout(giveUp);
      stopping = true;
      const left = spool.size;
      if (left.batches) log.warn("metering: shutting down with undelivered batches", left);
    },
  };
}

export type Batcher = ReturnType<typeof createBatcher>;
