/**
 * The restore drill (scripts/restore-drill.sh) really restores the ledger to a
 * point in time: a scratch primary archives WAL, infra/postgres/base-backup.sh
 * takes and verifies a base backup, and a server restored from it and the WAL
 * archive holds exactly the usage events written before the target. The drill
 * also fails when the restore is wrong (its DRILL_FAULT self-test), and leaves
 * no server or directory behind either way.
 *
 * Needs the PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup,
 * pg_verifybackup, pg_archivecleanup) under /usr/lib/postgresql/<version>/bin
 * or in PG_BIN, psql, and as root a postgres OS user. About 20 s per drill.
 */
import assert from "node:assert/strict";

const ROOT = decodeURIComponent(new URL("../../", import.meta.url).pathname);
const DRILL = `${ROOT}scripts/restore-drill.sh`;

interface Drill {
  code: number;
  stdout: string;
  stderr: string;
  /** Rows per batch, from `restore-drill: wrote batch=X rows=N`. */
  written: Record<string, number>;
  /** The last line of stdout, parsed; undefined when it is not the result line. */
  result?: { rowsVerified: number; rtoS: number; rpoS: number };
  dir: string;
  ports: number[];
}

async function runDrill(env: Record<string, string> = {}): Promise<Drill> {
  const out = await new Deno.Command("bash", {
    args: [DRILL],
    cwd: ROOT,
    env: { KEEP_DRILL_DIR: "", DRILL_FAULT: "", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  const stdout = text.decode(out.stdout);
  const stderr = text.decode(out.stderr);

  const written: Record<string, number> = {};
  for (const m of stdout.matchAll(/^restore-drill: wrote batch=([A-Z]) rows=(\d+)$/gm)) {
    written[m[1]] = Number(m[2]);
  }
  const last = stdout.trimEnd().split("\n").at(-1) ?? "";
  const m = /^restore-drill: rows_verified=(\d+) rto_s=(\d+\.\d+) rpo_s=(\d+\.\d+)$/.exec(last);
  const result = m
    ? { rowsVerified: Number(m[1]), rtoS: Number(m[2]), rpoS: Number(m[3]) }
    : undefined;
  const dir = /^\[drill\] scratch directory (\S+)$/m.exec(stderr)?.[1] ?? "";
  const ports = [
    ...stderr.matchAll(/^\[drill\] (?:primary: initdb|restore: .*), port (\d+)/gm),
  ].map((p) => Number(p[1]));
  return { code: out.code, stdout, stderr, written, result, dir, ports };
}

/** Both servers stopped and the scratch directory removed, whatever the outcome. */
async function assertCleanedUp(drill: Drill) {
  assert.ok(drill.dir.startsWith("/"), `no scratch directory in the log:\n${drill.stderr}`);
  await assert.rejects(Deno.stat(drill.dir), Deno.errors.NotFound, `${drill.dir} left behind`);
  assert.equal(drill.ports.length, 2, `expected two server ports in the log:\n${drill.stderr}`);
  for (const port of drill.ports) {
    await assert.rejects(
      Deno.connect({ hostname: "127.0.0.1", port }),
      Deno.errors.ConnectionRefused,
      `a server still listens on port ${port}`,
    );
  }
}

Deno.test("restore drill: a point-in-time restore brings back exactly the rows before the target", async () => {
  const drill = await runDrill();
  const log = `--- stdout ---\n${drill.stdout}\n--- stderr ---\n${drill.stderr}`;
  assert.equal(drill.code, 0, `the drill failed (exit ${drill.code})\n${log}`);

  const { A, B, C } = drill.written;
  assert.ok(A > 0 && B > 0 && C > 0, `batches A, B and C not all written\n${log}`);
  assert.ok(drill.result, `last line is not the result line\n${log}`);
  assert.equal(drill.result.rowsVerified, A + B, "the restore holds batches A and B, not C");
  assert.ok(drill.result.rtoS > 0, `rto_s ${drill.result.rtoS}`);
  assert.equal(drill.result.rpoS, 0, "nothing committed before the target is lost");
  assert.match(drill.stdout, /result\s+PASS/);
  await assertCleanedUp(drill);
});

Deno.test("restore drill: it fails when the restored ledger misses rows (DRILL_FAULT=early-target)", async () => {
  const drill = await runDrill({ DRILL_FAULT: "early-target" });
  const log = `--- stdout ---\n${drill.stdout}\n--- stderr ---\n${drill.stderr}`;
  assert.equal(drill.code, 1, `the drill must fail\n${log}`);

  // Restored to a moment before batch B: only A is there, and B's rows count as lost.
  assert.ok(drill.result, `a failed check still ends with the result line\n${log}`);
  assert.equal(drill.result.rowsVerified, drill.written.A);
  assert.ok(drill.result.rpoS > 0, `rpo_s ${drill.result.rpoS}`);
  assert.match(drill.stdout, /result\s+FAIL/);
  await assertCleanedUp(drill);
});
