import { PGlite } from "@electric-sql/pglite";
import { PGLiteSocketServer } from "@electric-sql/pglite-socket";
import postgres from "postgres";

export type Sql = postgres.Sql;

export interface Database {
  sql: Sql;
  /** `postgres` for a real server, `pglite` for the embedded default. */
  kind: "postgres" | "pglite";
  close(): Promise<void>;
}

const quiet = { onnotice: () => {} };

/**
 * Opens the ledger database. With a URL, real Postgres; without, embedded
 * PGlite persisted under `dataDir`, served over the Postgres wire protocol by
 * pglite-socket so the same postgres.js code and SQL run on both.
 */
export async function openDatabase(url: string | undefined, dataDir: string): Promise<Database> {
  if (url) {
    const sql = postgres(url, { ...quiet, max: 10, connect_timeout: 5, idle_timeout: 60 });
    return { sql, kind: "postgres", close: () => sql.end({ timeout: 5 }) };
  }
  await Deno.mkdir(dataDir, { recursive: true });
  const db = await PGlite.create(`${dataDir}/pglite`);
  const server = new PGLiteSocketServer({ db, host: "127.0.0.1", port: 0 });
  await server.start();
  // PGlite is single-session: one connection, which postgres.js queues on.
  const sql = postgres({
    ...quiet,
    host: "127.0.0.1",
    port: (server as unknown as { port: number }).port,
    user: "postgres",
    database: "postgres",
    max: 1,
  });
  return {
    sql,
    kind: "pglite",
    async close() {
      await sql.end({ timeout: 5 });
      await server.stop();
      await db.close();
    },
  };
}

/**
 * postgres.js loads array types on each new connection and drops that
 * promise (porsager/postgres#1192, #1205, #1223). A connection lost during it
 * rejects with no listener, and Deno would exit. The query that opened the
 * connection fails on its own (503; edges retry), so the process stays up.
 * Registered once, by the entry point, for `unhandledrejection`.
 */
export function ignoreLostTypeFetch(e: PromiseRejectionEvent): void {
  const query = (e.reason as { query?: unknown } | null)?.query;
  if (typeof query === "string" && query.includes("pg_catalog.pg_type")) {
    e.preventDefault();
    console.log(JSON.stringify({
      ts: new Date().toISOString(),
      level: "warn",
      msg: "postgres: connection lost while loading types",
      error: String(e.reason),
    }));
  }
}
