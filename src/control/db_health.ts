import type { Sql } from "../db/client.ts";
import { GatewayError } from "../errors.ts";
import type { Logger } from "../obs/log.ts";
import type { Metrics } from "../obs/metrics.ts";

/** Error codes of postgres.js and Postgres that mean "no database", not "bad query". */
const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "CONNECT_TIMEOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "57P01",
  "57P02",
  "57P03",
]);

export function isConnectionError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== "string") return false;
  return CONNECTION_CODES.has(code) || code.startsWith("08");
}

export function readOnlyError(why: string): GatewayError {
  return new GatewayError("db.read_only", why, { headers: { "retry-after": "5" } });
}

export interface DbHealthDeps {
  sql: Sql;
  log: Logger;
  metrics: Metrics;
  /** How often a down database is probed. */
  probeMs: number;
  onChange?: (down: boolean) => void;
}

/**
 * RB-5's automatic read-only mode. The first connection failure marks the
 * database down: writes are refused at once instead of each waiting out a
 * connect timeout, and a probe brings the aggregator back by itself.
 */
export class DbHealth {
  #down = false;
  #probe?: ReturnType<typeof setInterval>;

  constructor(private readonly deps: DbHealthDeps) {}

  get down(): boolean {
    return this.#down;
  }

  /** Runs a database operation, turning a lost database into `db.read_only`. */
  async run<T>(op: string, fn: () => Promise<T>): Promise<T> {
    if (this.#down) {
      throw readOnlyError("the ledger database is unreachable; the aggregator is read-only");
    }
    try {
      return await fn();
    } catch (err) {
      if (!isConnectionError(err)) throw err;
      this.deps.metrics.dbErrors.inc({ op });
      this.markDown(err);
      throw readOnlyError("the ledger database is unreachable; the aggregator is read-only");
    }
  }

  markDown(err: unknown): void {
    if (this.#down) return;
    this.#down = true;
    this.deps.log.error("database unreachable: read-only mode", { error: String(err) });
    this.deps.onChange?.(true);
    this.#probe = setInterval(() => void this.#check(), this.deps.probeMs);
  }

  #probing = false;

  async #check(): Promise<void> {
    // A probe that hangs on connect must not pile up behind itself.
    if (this.#probing) return;
    this.#probing = true;
    try {
      await this.deps.sql`SELECT 1`;
    } catch {
      // Counted, so the RB-5 alert keeps firing while writes are refused unattempted.
      this.deps.metrics.dbErrors.inc({ op: "probe" });
      return;
    } finally {
      this.#probing = false;
    }
    if (!this.#down) return;
    clearInterval(this.#probe);
    this.#down = false;
    this.deps.log.warn("database reachable again: read-only mode over");
    this.deps.onChange?.(false);
  }

  close(): void {
    clearInterval(this.#probe);
  }
}
