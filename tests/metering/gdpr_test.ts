import { parseCsv } from "../support/csv.ts";
import assert from "node:assert/strict";
import type { Sql } from "../../src/db/client.ts";
import {
  applyRetention,
  csvCell,
  exportEvents,
  pseudonymiseUser,
} from "../../src/metering/gdpr.ts";
import { ingestBatch } from "../../src/metering/ingest.ts";
import type { UsageEvent } from "../../src/metering/usage_event.ts";
import { DB_KINDS, withDatabase } from "../support/db.ts";
import { usageEvent } from "./_helpers.ts";

const COLUMNS = [
  "request_id",
  "tenant_id",
  "user_id",
  "session_id",
  "provider",
  "model",
  "input_tokens",
  "output_tokens",
  "tool_calls_count",
  "audio_seconds_in",
  "audio_seconds_out",
  "latency_ms",
  "success",
  "error_code",
  "mode",
  "cost_usd",
  "occurred_at",
];

/** An ISO instant `months` calendar months plus `days` days before now (UTC). */
function ago(months: number, days = 0): string {
  const d = new Date();
  d.setUTCDate(1); // avoid month-end overflow, then restore the day below
  const day = new Date().getUTCDate();
  d.setUTCMonth(d.getUTCMonth() - months);
  const last = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 0)).getUTCDate();
  d.setUTCDate(Math.min(day, last));
  d.setUTCDate(d.getUTCDate() - days);
  return d.toISOString();
}

async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function hmacHex(key: string, text: string): Promise<string> {
  const k = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(key),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = await crypto.subtle.sign("HMAC", k, new TextEncoder().encode(text));
  return [...new Uint8Array(mac)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

const ids = async (sql: Sql) =>
  (await sql`SELECT request_id FROM usage_events ORDER BY request_id`).map((r) =>
    r.request_id as string
  );

const rollups = async (sql: Sql) => ({
  tenant: (await sql`SELECT * FROM usage_daily_tenant ORDER BY day, tenant_id`).map((r) => ({
    ...r,
  })),
  model: (await sql`SELECT * FROM usage_daily_model ORDER BY day, model`).map((r) => ({ ...r })),
});

for (const kind of DB_KINDS) {
  Deno.test(`${kind}: applyRetention keeps 24 months for consumers, schools and unknown tenants; business its own`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      await sql`INSERT INTO tenants (id, type, retention_months) VALUES
        ('consumer', 'consumer', NULL), ('school', 'school', NULL),
        ('biz-36', 'business', 36), ('biz-default', 'business', NULL),
        ('consumer-84', 'consumer', 84)`;
      const ev = (id: string, tenant: string, at: string) =>
        usageEvent({ request_id: id, tenant_id: tenant, occurred_at: at });
      const events = [
        ev("consumer-old", "consumer", ago(24, 3)),
        ev("consumer-new", "consumer", ago(23)),
        ev("consumer-recent", "consumer", ago(0, 1)),
        ev("school-old", "school", ago(25)),
        ev("school-new", "school", ago(24, -3)),
        ev("unknown-old", "nobody", ago(25)),
        ev("unknown-new", "nobody", ago(23)),
        ev("biz36-old", "biz-36", ago(37)),
        ev("biz36-kept", "biz-36", ago(35)),
        ev("bizdef-old", "biz-default", ago(61)),
        ev("bizdef-kept", "biz-default", ago(30)),
        ev("c84-old", "consumer-84", ago(25)),
      ];
      await ingestBatch(sql, "b-ret", events);
      const before = await rollups(sql);
      const deleted = await applyRetention(sql, 60);
      assert.deepEqual(await ids(sql), [
        "biz36-kept",
        "bizdef-kept",
        "consumer-new",
        "consumer-recent",
        "school-new",
        "unknown-new",
      ]);
      assert.equal(deleted, 6);
      assert.deepEqual(await rollups(sql), before, "rollups keep the aggregates");
      assert.equal(await applyRetention(sql, 60), 0, "idempotent");
    });
  });

  Deno.test(`${kind}: applyRetention uses the default business months argument`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      await sql`INSERT INTO tenants (id, type) VALUES ('biz', 'business')`;
      await ingestBatch(sql, "b", [
        usageEvent({ request_id: "biz-30", tenant_id: "biz", occurred_at: ago(30) }),
        usageEvent({ request_id: "biz-40", tenant_id: "biz", occurred_at: ago(40) }),
        usageEvent({ request_id: "con-30", tenant_id: "con", occurred_at: ago(30) }),
      ]);
      assert.equal(await applyRetention(sql, 48), 1, "only the consumer's 30-month-old row");
      assert.deepEqual(await ids(sql), ["biz-30", "biz-40"]);
      assert.equal(await applyRetention(sql, 36), 1);
      assert.deepEqual(await ids(sql), ["biz-30"]);
      assert.equal(await applyRetention(sql, 24), 1);
      assert.deepEqual(await ids(sql), []);
    });
  });

  Deno.test(`${kind}: pseudonymiseUser replaces the user with a stable keyed pseudonym`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const mine = [
        usageEvent({ tenant_id: "t1", user_id: "alice", session_id: "s-1" }),
        usageEvent({ tenant_id: "t1", user_id: "alice", session_id: "s-2", mode: "managed" }),
      ];
      const others = [
        usageEvent({ tenant_id: "t1", user_id: "bob", session_id: "s-3" }),
        usageEvent({ tenant_id: "t2", user_id: "alice", session_id: "s-4" }),
      ];
      await ingestBatch(sql, "b", [...mine, ...others]);
      await sql`INSERT INTO users (tenant_id, id) VALUES ('t1', 'alice'), ('t1', 'bob'),
        ('t2', 'alice')`;
      await sql`INSERT INTO api_keys (id, hash, tenant_id, user_id, revoked_at) VALUES
        ('k1', 'h1', 't1', 'alice', NULL), ('k2', 'h2', 't1', 'alice', NULL),
        ('k-old', 'h3', 't1', 'alice', '2020-01-01T00:00:00Z'),
        ('k-bob', 'h4', 't1', 'bob', NULL), ('k-t2', 'h5', 't2', 'alice', NULL)`;
      const before = await rollups(sql);

      const { pseudonym, rows } = await pseudonymiseUser(sql, "t1", "alice", "gdpr-key");
      assert.equal(rows, 2);
      assert.match(pseudonym, /^anon_[0-9a-f]{24}$/);
      assert.equal(
        pseudonym,
        `anon_${(await hmacHex("gdpr-key", "t1\u0000alice")).slice(0, 24)}`,
        "a keyed hash of tenant and user",
      );

      const events = await sql`SELECT request_id, tenant_id, user_id, session_id
        FROM usage_events ORDER BY request_id`;
      const byId = new Map(events.map((e) => [e.request_id, e]));
      for (const e of mine) {
        assert.equal(byId.get(e.request_id)!.user_id, pseudonym);
        assert.equal(byId.get(e.request_id)!.session_id, null, "session ids cleared");
      }
      assert.equal(byId.get(others[0].request_id)!.user_id, "bob");
      assert.equal(byId.get(others[0].request_id)!.session_id, "s-3");
      assert.equal(byId.get(others[1].request_id)!.user_id, "alice", "other tenant untouched");
      assert.equal(byId.get(others[1].request_id)!.session_id, "s-4");

      const keys = Object.fromEntries(
        (await sql`SELECT id, revoked_at FROM api_keys`).map((k) => [k.id, k.revoked_at]),
      );
      assert.ok(keys.k1 instanceof Date && keys.k2 instanceof Date, "alice's keys revoked");
      assert.equal((keys["k-old"] as Date).toISOString(), "2020-01-01T00:00:00.000Z");
      assert.equal(keys["k-bob"], null);
      assert.equal(keys["k-t2"], null);

      const users = await sql`SELECT tenant_id, id, deleted_at IS NOT NULL AS deleted
        FROM users ORDER BY tenant_id, id`;
      assert.deepEqual(users.map((u) => ({ ...u })), [
        { tenant_id: "t1", id: pseudonym, deleted: true }, // "anon_…" sorts before "bob"
        { tenant_id: "t1", id: "bob", deleted: false },
        { tenant_id: "t2", id: "alice", deleted: false },
      ]);

      assert.deepEqual(await rollups(sql), before, "rollups unchanged");

      // Stable: the same key gives the same pseudonym; nothing left to change.
      const again = await pseudonymiseUser(sql, "t1", "alice", "gdpr-key");
      assert.deepEqual(again, { pseudonym, rows: 0 });
      // Another tenant's same user id, or another key: a different pseudonym.
      const t2 = await pseudonymiseUser(sql, "t2", "alice", "gdpr-key");
      assert.equal(t2.rows, 1);
      assert.notEqual(t2.pseudonym, pseudonym);
      const otherKey = await pseudonymiseUser(sql, "t1", "alice", "another-key");
      assert.notEqual(otherKey.pseudonym, pseudonym);
      assert.equal(otherKey.rows, 0);
      assert.equal(
        (await sql`SELECT count(*)::int AS n FROM usage_events WHERE user_id = ${pseudonym}`)[0]
          .n,
        2,
      );
    });
  });

  Deno.test(`${kind}: exportEvents jsonl: rows, content, sha256 and the user filter`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const events: UsageEvent[] = [
        usageEvent({ user_id: "u1", occurred_at: "2024-03-01T10:00:00.000Z", cost_usd: 0.000001 }),
        usageEvent({
          user_id: "u2",
          occurred_at: "2024-03-01T11:00:00.000Z",
          session_id: null,
          model: null,
          provider: null,
          success: false,
          error_code: "blocked",
          mode: "managed",
          audio_seconds_in: 1.5,
          cost_usd: 1.25,
        }),
        usageEvent({ user_id: "u1", occurred_at: "2024-03-02T10:00:00.000Z", cost_usd: 0 }),
        usageEvent({ tenant_id: "other", user_id: "u1" }),
      ];
      await ingestBatch(sql, "b", events);
      const all = await exportEvents(sql, "tenant-a", undefined, "jsonl");
      assert.equal(all.rows, 3);
      assert.equal(all.sha256, await sha256Hex(all.body));
      assert.ok(all.body.endsWith("\n"));
      const lines = all.body.split("\n").slice(0, -1);
      assert.equal(lines.length, 3);
      const parsed = lines.map((l) => JSON.parse(l));
      const expected = events.slice(0, 3).map(({ lane: _lane, ...e }) => e);
      assert.deepEqual(parsed, expected, "every column, oldest first, cost as a number");
      for (const p of parsed) assert.deepEqual(Object.keys(p), COLUMNS);

      const u1 = await exportEvents(sql, "tenant-a", "u1", "jsonl");
      assert.equal(u1.rows, 2);
      assert.deepEqual(
        u1.body.trim().split("\n").map((l) => JSON.parse(l).request_id),
        [events[0].request_id, events[2].request_id],
      );
      assert.equal(u1.sha256, await sha256Hex(u1.body));
      assert.notEqual(u1.sha256, all.sha256);

      const none = await exportEvents(sql, "tenant-a", "ghost", "jsonl");
      assert.deepEqual(none, { body: "", sha256: await sha256Hex(""), rows: 0 });
    });
  });

  Deno.test(`${kind}: exportEvents csv: header, quoting, formula guard, sha256`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const tricky = [
        usageEvent({
          user_id: '=HYPERLINK("http://x")',
          session_id: 'say "hi", then\nleave',
          occurred_at: "2024-03-01T00:00:01.000Z",
        }),
        usageEvent({ user_id: "+1", occurred_at: "2024-03-01T00:00:02.000Z" }),
        usageEvent({ user_id: "-2", occurred_at: "2024-03-01T00:00:03.000Z" }),
        usageEvent({ user_id: "@sum", occurred_at: "2024-03-01T00:00:04.000Z" }),
        usageEvent({
          user_id: "plain",
          session_id: null,
          success: false,
          error_code: "a,b",
          occurred_at: "2024-03-01T00:00:05.000Z",
          cost_usd: 0.5,
        }),
      ];
      await ingestBatch(sql, "b", tricky);
      const out = await exportEvents(sql, "tenant-a", undefined, "csv");
      assert.equal(out.rows, 5);
      assert.equal(out.sha256, await sha256Hex(out.body));
      assert.equal(out.body.split("\n")[0], COLUMNS.join(","));
      const table = parseCsv(out.body);
      assert.deepEqual(table[0], COLUMNS);
      assert.equal(table.length, 6, "header plus one row per event, despite the newline");
      for (const row of table) assert.equal(row.length, COLUMNS.length);
      const col = (name: string) => table.slice(1).map((r) => r[COLUMNS.indexOf(name)]);
      assert.deepEqual(col("user_id"), [
        '\'=HYPERLINK("http://x")',
        "'+1",
        "'-2",
        "'@sum",
        "plain",
      ]);
      assert.deepEqual(col("session_id"), [
        'say "hi", then\nleave',
        "sess-1",
        "sess-1",
        "sess-1",
        "",
      ]);
      assert.deepEqual(col("error_code"), ["", "", "", "", "a,b"]);
      assert.deepEqual(col("success"), ["true", "true", "true", "true", "false"]);
      assert.deepEqual(col("cost_usd").slice(4), ["0.5"]);
      assert.deepEqual(col("occurred_at")[0], "2024-03-01T00:00:01.000Z");
      assert.deepEqual(col("request_id"), tricky.map((e) => e.request_id));

      const plain = await exportEvents(sql, "tenant-a", "plain", "csv");
      assert.equal(plain.rows, 1);
      assert.equal(parseCsv(plain.body).length, 2);
      assert.equal(plain.sha256, await sha256Hex(plain.body));
    });
  });
}

Deno.test("csvCell: quotes, formula guard, empty nulls", () => {
  assert.equal(csvCell(null), "");
  assert.equal(csvCell(undefined), "");
  assert.equal(csvCell("plain"), "plain");
  assert.equal(csvCell("a,b"), '"a,b"');
  assert.equal(csvCell('a"b'), '"a""b"');
  assert.equal(csvCell("a\nb"), '"a\nb"');
  assert.equal(csvCell("a\rb"), '"a\rb"');
  assert.equal(csvCell("=1+1"), "'=1+1");
  assert.equal(csvCell("=a,b"), `"'=a,b"`);
  assert.equal(csvCell("\tx"), "'\tx");
  assert.equal(csvCell(-5), "-5", "numbers are not formulas");
  assert.equal(csvCell(false), "false");
  assert.equal(csvCell(new Date("2024-01-02T03:04:05Z")), "2024-01-02T03:04:05.000Z");
});
