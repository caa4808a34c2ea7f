import assert from "node:assert/strict";
import {
  appendAudit,
  type AuditEntry,
  AuditQuerySchema,
  type AuditRow,
  canonicalJson,
  queryAudit,
  verifyAudit,
} from "../../src/control/audit.ts";
import type { Sql } from "../../src/db/client.ts";
import { DB_KINDS, withDatabase } from "../support/db.ts";

const GENESIS = "0".repeat(64);
const T0 = Date.UTC(2026, 4, 1, 9);

function entry(over: Partial<AuditEntry> = {}): AuditEntry {
  return {
    actor: "ops@example.com",
    actor_tenant: null,
    action: "flag.set",
    target: "flag:voice_mode",
    before: null,
    after: { default: "on" },
    request_id: "req-1",
    reason: "rollout",
    ...over,
  };
}

/** Appends entries one transaction each, a second apart, as the admin API does. */
async function append(sql: Sql, ...entries: AuditEntry[]): Promise<AuditRow[]> {
  const rows: AuditRow[] = [];
  for (const e of entries) {
    rows.push(
      await sql.begin((tx) => appendAudit(tx as unknown as Sql, e, T0 + rows.length * 1000)),
    );
  }
  return rows;
}

/** Runs statements the append-only trigger would refuse, as a superuser working around it. */
function tamper(sql: Sql, fn: (tx: Sql) => Promise<unknown>) {
  return sql.begin(async (tx) => {
    await tx`SET LOCAL session_replication_role = replica`;
    await fn(tx as unknown as Sql);
  });
}

const three = () => [
  entry({ reason: "first" }),
  entry({ reason: "second", before: { default: "on" }, after: { default: "off" } }),
  entry({ reason: "third", actor_tenant: "t1" }),
];

Deno.test("canonicalJson sorts keys at every depth and drops undefined", () => {
  const a = { b: 1, a: { d: [{ z: 1, y: 2 }], c: "x" }, u: undefined };
  const b = { a: { c: "x", d: [{ y: 2, z: 1 }] }, b: 1 };
  assert.equal(canonicalJson(a), '{"a":{"c":"x","d":[{"y":2,"z":1}]},"b":1}');
  assert.equal(canonicalJson(a), canonicalJson(b));
  assert.notEqual(canonicalJson([1, 2]), canonicalJson([2, 1]));
  assert.equal(canonicalJson(undefined), "null");
});

for (const kind of DB_KINDS) {
  Deno.test(`${kind}: an empty audit log verifies with no head`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      assert.deepEqual(await verifyAudit(sql), { ok: true, rows: 0, head: undefined });
    });
  });

  Deno.test(`${kind}: appended rows form a hash chain from the genesis hash`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const rows = await append(sql, ...three());
      assert.equal(rows[0].prev_hash, GENESIS);
      assert.equal(rows[1].prev_hash, rows[0].hash);
      assert.equal(rows[2].prev_hash, rows[1].hash);
      for (const r of rows) assert.match(r.hash, /^[0-9a-f]{64}$/);
      assert.equal(new Set(rows.map((r) => r.hash)).size, 3);
      assert.deepEqual(await verifyAudit(sql), { ok: true, rows: 3, head: rows[2].hash });
      // Paging through the chain gives the same verdict.
      assert.deepEqual(await verifyAudit(sql, 2), { ok: true, rows: 3, head: rows[2].hash });
    });
  });

  Deno.test(`${kind}: jsonb reordering keys does not break a row's hash`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const before = { zeta: 1, alpha: { gamma: true, beta: [3, { y: 1, x: 2 }] }, b: null };
      await append(sql, entry({ before, after: { list: [], "a long key": "v", k: 0.5 } }));
      const [stored] = await sql`SELECT before FROM audit_log`;
      // jsonb orders keys by length: the round trip does change the order.
      assert.notDeepEqual(Object.keys(stored.before), Object.keys(before));
      assert.equal((await verifyAudit(sql)).ok, true);
    });
  });

  Deno.test(`${kind}: the trigger refuses UPDATE and DELETE on audit_log`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      await append(sql, ...three());
      await assert.rejects(sql`UPDATE audit_log SET reason = 'edited'`, /append-only/);
      await assert.rejects(sql`DELETE FROM audit_log`, /append-only/);
      assert.deepEqual((await verifyAudit(sql)).rows, 3);
    });
  });

  Deno.test(`${kind}: an edited row fails its own hash ("content")`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const rows = await append(sql, ...three());
      await tamper(
        sql,
        (tx) => tx`UPDATE audit_log SET reason = 'nothing to see' WHERE id = ${rows[1].id}`,
      );
      assert.deepEqual(await verifyAudit(sql), {
        ok: false,
        rows: 1,
        broken: { id: rows[1].id, reason: "content" },
      });
    });
  });

  Deno.test(`${kind}: a deleted row breaks the next row's link ("link")`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const rows = await append(sql, ...three());
      await tamper(sql, (tx) => tx`DELETE FROM audit_log WHERE id = ${rows[1].id}`);
      assert.deepEqual(await verifyAudit(sql), {
        ok: false,
        rows: 1,
        broken: { id: rows[2].id, reason: "link" },
      });
    });
  });

  Deno.test(`${kind}: queryAudit filters by actor, action prefix, target and tenant`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const rows = await append(
        sql,
        entry({ actor: "alice", actor_tenant: "t1", action: "flag.set" }),
        entry({ actor: "bob", action: "tenant.upsert", target: "tenant:t1" }),
        entry({ actor: "bob", actor_tenant: "t2", action: "tool.denied", target: "tenant:t2" }),
        entry({ actor: "alice", action: "flag.kill", target: "flag:routing_policy" }),
        entry({ actor: "carol", action: "mitigation.apply", target: "mitigation:voice_text" }),
        entry({
          actor: "dave",
          actor_tenant: "t10",
          action: "tenant.upsert",
          target: "tenant:t10",
        }),
      );
      const ids = async (q: Record<string, unknown>) =>
        (await queryAudit(sql, AuditQuerySchema.parse(q))).map((r) => r.id);
      const id = (i: number) => rows[i].id;
      assert.deepEqual(await ids({}), [id(5), id(4), id(3), id(2), id(1), id(0)]);
      assert.deepEqual(await ids({ actor: "alice" }), [id(3), id(0)]);
      assert.deepEqual(await ids({ action: "flag." }), [id(3), id(0)]);
      assert.deepEqual(await ids({ action: "mitigation" }), [id(4)]);
      assert.deepEqual(await ids({ target: "flag:routing_policy" }), [id(3)]);
      // Exactly the tenant: t10's rows are not t1's.
      assert.deepEqual(await ids({ tenant: "t1" }), [id(1), id(0)]);
      assert.deepEqual(await ids({ tenant: "t2" }), [id(2)]);
      assert.deepEqual(await ids({ actor: "bob", tenant: "t1" }), [id(1)]);
    });
  });

  Deno.test(`${kind}: queryAudit pages backwards with before_id and limit`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const rows = await append(
        sql,
        ...Array.from({ length: 6 }, (_, i) => entry({ reason: `r${i}` })),
      );
      const page = async (q: Record<string, unknown>) =>
        (await queryAudit(sql, AuditQuerySchema.parse(q))).map((r) => r.reason);
      assert.deepEqual(await page({ limit: 2 }), ["r5", "r4"]);
      assert.deepEqual(await page({ limit: 2, before_id: rows[4].id }), ["r3", "r2"]);
      assert.deepEqual(await page({ before_id: rows[2].id }), ["r1", "r0"]);
      assert.deepEqual(await page({ before_id: rows[0].id }), []);
    });
  });

  Deno.test(`${kind}: queryAudit returns rows as appended, with since and until`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const rows = await append(sql, ...three());
      const [newest] = await queryAudit(sql, AuditQuerySchema.parse({ limit: 1 }));
      assert.deepEqual(newest, rows[2]);
      const at = (i: number) => new Date(T0 + i * 1000).toISOString();
      const window = await queryAudit(sql, AuditQuerySchema.parse({ since: at(1), until: at(2) }));
      assert.deepEqual(window.map((r) => r.reason), ["second"]);
    });
  });
}
