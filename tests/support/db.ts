import postgres from "postgres";
import { type Database, openDatabase } from "../../src/db/client.ts";
import { migrate } from "../../src/db/migrate.ts";

/** The real Postgres every test machine runs; each test gets a database of its own there. */
export const PG_ADMIN_URL = Deno.env.get("TEST_PG_URL") ??
  "postgres://postgres@127.0.0.1:5432/postgres";

/** A fresh database on the real server; returns its URL and a drop function. */
export async function freshPostgres(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `cvg_t_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  const admin = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
  await admin.unsafe(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = PG_ADMIN_URL.replace(/\/[^/]*$/, `/${name}`);
  return {
    url,
    async drop() {
      const a = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
      await a.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await a.end();
    },
  };
}

export type DbKind = "postgres" | "pglite";
export const DB_KINDS: DbKind[] = ["postgres", "pglite"];

/** Runs `fn` on a migrated, empty ledger of the given kind, then removes it. */
export async function withDatabase<T>(kind: DbKind, fn: (db: Database) => Promise<T>): Promise<T> {
  if (kind === "postgres") {
    const pg = await freshPostgres();
    const db = await openDatabase(pg.url, "/nonexistent");
    try {
      await migrate(db.sql);
      return await fn(db);
    } finally {
      await db.close();
      await pg.drop();
    }
  }
  const dir = await Deno.makeTempDir({ prefix: "cvg-pglite-" });
  const db = await openDatabase(undefined, dir);
  try {
    await migrate(db.sql);
    return await fn(db);
  } finally {
    await db.close();
    await Deno.remove(dir, { recursive: true });
  }
}
