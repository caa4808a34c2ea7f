import type { Sql } from "./client.ts";

/** Versioned migrations, applied in order; a file is never edited once released. */
const MIGRATIONS = [
  { version: 1, file: "001_ledger.sql" },
  { version: 2, file: "002_control.sql" },
  { version: 3, file: "003_ttft.sql" },
];

/** Arbitrary but fixed: every aggregator replica takes the same lock. */
const LOCK_KEY = 7_204_331;

/**
 * Applies pending migrations under a session advisory lock, so replicas
 * booting together apply each one exactly once. Returns the versions applied.
 */
export async function migrate(sql: Sql): Promise<number[]> {
  const conn = await sql.reserve();
  try {
    await conn`SELECT pg_advisory_lock(${LOCK_KEY})`;
    await conn`CREATE TABLE IF NOT EXISTS schema_migrations (
      version integer PRIMARY KEY,
      file text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`;
    const done = new Set(
      (await conn<{ version: number }[]>`SELECT version FROM schema_migrations`).map((r) =>
        r.version
      ),
    );
    const applied: number[] = [];
    for (const m of MIGRATIONS) {
      if (done.has(m.version)) continue;
      const text = await Deno.readTextFile(new URL(`./migrations/${m.file}`, import.meta.url));
      await conn.unsafe("BEGIN");
      try {
        await conn.unsafe(text);
        await conn`INSERT INTO schema_migrations (version, file) VALUES (${m.version}, ${m.file})`;
        await conn.unsafe("COMMIT");
      } catch (err) {
        await conn.unsafe("ROLLBACK");
        throw new Error(`migration ${m.file} failed: ${(err as Error).message}`, { cause: err });
      }
      applied.push(m.version);
    }
    return applied;
  } finally {
    await conn`SELECT pg_advisory_unlock(${LOCK_KEY})`.catch(() => {});
    conn.release();
  }
}
