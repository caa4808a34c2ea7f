import assert from "node:assert/strict";
import postgres from "postgres";
import { startPgCluster } from "./pg_cluster.ts";

Deno.test("a private cluster really goes down, comes back with its data, and is removed", async () => {
  const pg = await startPgCluster({ extraConf: "work_mem = '7MB'" });
  const sql = postgres(pg.url, { max: 1, onnotice: () => {}, connect_timeout: 2 });
  try {
    const [{ work_mem }] = await sql`SHOW work_mem`;
    assert.equal(work_mem, "7MB");
    await sql`CREATE TABLE kept (v text)`;
    await sql`INSERT INTO kept VALUES ('survives restart')`;

    await pg.stop();
    await assert.rejects(sql`SELECT 1`, { code: "ECONNREFUSED" });

    await pg.start();
    assert.deepEqual([...await sql`SELECT v FROM kept`.values()], [["survives restart"]]);
  } finally {
    await sql.end();
    await pg.destroy();
  }
  await assert.rejects(Deno.stat(pg.dataDir), Deno.errors.NotFound);
});
