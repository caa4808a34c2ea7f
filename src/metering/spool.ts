import type { Logger } from "../obs/log.ts";
import type { Metrics } from "../obs/metrics.ts";
import type { UsageEvent } from "./usage_event.ts";

export interface SpooledBatch {
  batch_id: string;
  created_at: number;
  events: UsageEvent[];
}

export interface SpoolOptions {
  /** Bound on events held; past it new batches are dropped, loudly. */
  maxEvents: number;
  /** Append-only journal for self-hosted edges; none on Deno Deploy. */
  file?: string;
  log: Logger;
  metrics: Metrics;
  now: () => number;
}

type JournalLine = { op: "add"; batch: SpooledBatch } | { op: "ack"; batch_id: string };

/** Journal size past which, once the spool is empty, it is truncated. */
const COMPACT_BYTES = 8 * 1024 * 1024;

/**
 * Unacknowledged batches, oldest first. In memory always; with a file, every
 * add and ack is appended to a journal first, so batches survive a restart
 * and are replayed on open.
 */
export class Spool {
  readonly #queue: SpooledBatch[] = [];
  #events = 0;
  #journalBytes = 0;

  private constructor(private readonly opts: SpoolOptions) {}

  static async open(opts: SpoolOptions): Promise<Spool> {
    const spool = new Spool(opts);
    if (opts.file) {
      const dir = opts.file.slice(0, opts.file.lastIndexOf("/"));
      if (dir) await Deno.mkdir(dir, { recursive: true });
      await spool.#replay(opts.file);
      spool.#rewrite();
    }
    spool.#observe();
    return spool;
  }

  /**
   * Rewrites the journal with just the pending batches: compacts it, and
   * ends a torn last line so that later appends start on a line of their own.
   */
  #rewrite() {
    const text = this.#queue.map((batch) => JSON.stringify({ op: "add", batch }) + "\n").join("");
    Deno.writeTextFileSync(this.opts.file!, text);
    this.#journalBytes = text.length;
  }

  async #replay(file: string) {
    let text = "";
    try {
      text = await Deno.readTextFile(file);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    this.#journalBytes = text.length;
    const pending = new Map<string, SpooledBatch>();
    for (const line of text.split("\n")) {
      if (!line) continue;
      let entry: JournalLine;
      try {
        entry = JSON.parse(line);
      } catch {
        // A torn last line from a crash mid-write: its batch was never acked
        // by anyone, and the line before it is intact.
        this.opts.log.warn("metering spool: skipped a torn journal line");
        continue;
      }
      if (entry.op === "add") pending.set(entry.batch.batch_id, entry.batch);
      else pending.delete(entry.batch_id);
    }
    for (const batch of pending.values()) this.#enqueue(batch);
    if (pending.size) {
      this.opts.log.info("metering spool replayed", {
        batches: pending.size,
        events: this.#events,
      });
    }
  }

  #append(entry: JournalLine) {
    if (!this.opts.file) return;
    const line = JSON.stringify(entry) + "\n";
    try {
      Deno.writeTextFileSync(this.opts.file, line, { append: true, create: true });
      this.#journalBytes += line.length;
    } catch (err) {
      // The batch is still in memory and will be delivered; only its
      // survival across a restart is at risk, so say so loudly.
      this.opts.log.error("METERING JOURNAL WRITE FAILED", {
        file: this.opts.file,
        error: (err as Error).message,
      });
    }
  }

  #enqueue(batch: SpooledBatch) {
    this.#queue.push(batch);
    this.#events += batch.events.length;
  }

  #observe() {
    const m = this.opts.metrics;
    m.spoolDepthEvents.set(this.#events);
    m.spoolDepthBatches.set(this.#queue.length);
    m.spoolOldestAge.set(
      this.#queue.length ? (this.opts.now() - this.#queue[0].created_at) / 1000 : 0,
    );
  }

  /** Adds a batch; false when the bound would be passed (the batch is dropped, loudly). */
  push(batch: SpooledBatch): boolean {
    if (this.#events + batch.events.length > this.opts.maxEvents) {
      this.opts.metrics.spoolDropped.inc(batch.events.length);
      this.opts.log.error("METERING SPOOL FULL: usage events dropped", {
        batch_id: batch.batch_id,
        dropped_events: batch.events.length,
        spool_events: this.#events,
        bound: this.opts.maxEvents,
      });
      return false;
    }
    this.#append({ op: "add", batch });
    this.#enqueue(batch);
    this.#observe();
    return true;
  }

  peek(): SpooledBatch | undefined {
    return this.#queue[0];
  }

  ack(batchId: string): void {
    const i = this.#queue.findIndex((b) => b.batch_id === batchId);
    if (i < 0) return;
    const [batch] = this.#queue.splice(i, 1);
    this.#events -= batch.events.length;
    this.#append({ op: "ack", batch_id: batchId });
    if (this.opts.file && this.#queue.length === 0 && this.#journalBytes > COMPACT_BYTES) {
      this.#rewrite();
    }
    this.#observe();
  }

  get size(): { batches: number; events: number } {
    return { batches: this.#queue.length, events: this.#events };
  }

  /** Refreshes the age gauge; called by the sender as time passes. */
  observe(): void {
    this.#observe();
  }
}
