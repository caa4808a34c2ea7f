import postgres from "postgres";
import { freshPostgres, PG_ADMIN_URL } from "../support/db.ts";
globalThis.addEventListener("unhandledrejection", (e) => {
  console.log("UNHANDLED", (e.reason as Error)?.stack?.slice(0, 1500));
  e.preventDefault();
});
const db = await freshPostgres();
const name = new URL(db.url).pathname.slice(1);
const admin = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
const sql = postgres(db.url, { onnotice: () => {}, max: 10, connect_timeout: 5, idle_timeout: 60 });
await sql`CREATE TABLE t (id text primary key)`;
let ok = 0, failed = 0;
const q = async (i: number) => { try { await sql`INSERT INTO t SELECT * FROM jsonb_to_recordset(${sql.json([{ id: String(i) + Math.random() }])}::jsonb) AS x(id text)`; ok++; } catch (e) { failed++; } };
for (let round = 0; round < 10; round++) {
  await Promise.all(Array.from({ length: 5 }, (_, i) => q(i)));
  await admin.unsafe(`ALTER DATABASE ${name} WITH ALLOW_CONNECTIONS false`);
  await admin.unsafe(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname='${name}' AND pid<>pg_backend_pid()`);
  for (let k = 0; k < 5; k++) { await q(k); await new Promise((r) => setTimeout(r, 50)); }
  await admin.unsafe(`ALTER DATABASE ${name} WITH ALLOW_CONNECTIONS true`);
  for (let k = 0; k < 5; k++) { await q(k); }
  // plain terminate with concurrent queries
  const p = Promise.all(Array.from({ length: 5 }, (_, i) => q(i)));
  await admin.unsafe(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname='${name}' AND pid<>pg_backend_pid()`);
  await p;
}
console.log({ ok, failed });
await sql.end({ timeout: 2 }).catch(() => {});
await admin.end();
await db.drop();
