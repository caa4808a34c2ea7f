import { parseCsv } from "../support/csv.ts";
import assert from "node:assert/strict";
import {
  type AccessReview,
  buildAccessReview,
  parseQuarter,
  previousQuarter,
  quarterLabel,
  quarterRange,
} from "../../src/compliance/access_review.ts";
import type { Sql } from "../../src/db/client.ts";
import { openDatabase } from "../../src/db/client.ts";
import { migrate } from "../../src/db/migrate.ts";
import { ingestBatch } from "../../src/metering/ingest.ts";
import { run } from "../../scripts/report_quarterly.ts";
import { DB_KINDS, freshPostgres, withDatabase } from "../support/db.ts";
import { usageEvent } from "../metering/_helpers.ts";

const ROOT = decodeURIComponent(new URL("../../", import.meta.url).pathname);
const NOW = new Date("2026-10-01T08:00:00Z");
const Q3 = { year: 2026, q: 3 };

/** The CSV as one record per row, keyed by the header. */
function records(csv: string): Record<string, string>[] {
  const [header, ...rows] = parseCsv(csv);
  for (const r of rows) assert.equal(r.length, header.length, "every row has every column");
  return rows.map((r) => Object.fromEntries(header.map((h, i) => [h, r[i]])));
}

const of = (review: AccessReview, kind: string) =>
  records(review.csv).filter((r) => r.kind === kind);

async function seed(sql: Sql) {
  await sql`INSERT INTO plans (name, limits) VALUES
    ('pro', '{"daily_budget_usd": 10, "monthly_budget_usd": 200}')`;
  await sql`INSERT INTO tenants (id, type, plan, limits, retention_months) VALUES
    ('acme', 'business', 'pro', '{"daily_budget_usd": 50}', 36),
    ('biz-default', 'business', NULL, '{}', NULL),
    ('school-1', 'school', NULL, '{}', NULL),
    ('con-84', 'consumer', NULL, '{"monthly_budget_usd": 5}', 84)`;
  await sql`INSERT INTO api_keys (id, hash, tenant_id, user_id, roles, created_at, last_used_at,
    revoked_at) VALUES
    ('k-root', 'h1', 'ops', 'root', '{admin}', '2026-01-01T00:00:00Z', '2026-09-30T12:00:00Z',
      NULL),
    ('k-ann', 'h2', 'acme', 'ann', '{tenant_admin,user}', '2025-01-01T00:00:00Z', NULL, NULL),
    ('k-bob', 'h3', 'acme', 'bob', '{user}', '2025-01-01T00:00:00Z', '2026-06-01T00:00:00Z',
      NULL),
    ('k-cat', 'h4', 'acme', 'cat', '{user}', '2026-09-01T00:00:00Z', NULL, NULL),
    ('k-dan', 'h5', 'acme', 'dan', '{admin}', '2025-01-01T00:00:00Z', NULL,
      '2026-08-01T00:00:00Z'),
    ('k-edge', 'h6', 'acme', 'eve', '{user}', '2025-01-01T00:00:00Z', '2026-07-03T08:00:00Z',
      NULL),
    ('k-ghost', 'h7', 'ghost', 'g', '{user}', '2026-09-20T00:00:00Z', NULL, NULL)`;
  await sql`INSERT INTO budget_overrides (tenant_id, reason, by_user, expires_at) VALUES
    ('acme', 'launch "Q3", approved', 'root', '2026-10-05T00:00:00Z'),
    ('school-1', 'expired already', 'root', '2026-09-01T00:00:00Z'),
    ('walk-in', 'pilot', 'ops|lead', '2026-10-02T00:00:00Z')`;
  await sql`INSERT INTO audit_log (at, actor, actor_tenant, action, target, prev_hash, hash)
    VALUES
    ('2026-06-30T23:59:59.999Z', 'root', 'ops', 'budget_override.set', 'tenant:acme', 'p0', 'h0'),
    ('2026-07-01T00:00:00Z', 'root', 'ops', 'budget_override.set', 'tenant:acme', 'h0', 'h1'),
    ('2026-08-15T10:00:00Z', 'ann', 'acme', 'tenant.upsert', 'tenant:acme', 'h1', 'h2'),
    ('2026-09-10T10:00:00Z', 'root', 'ops', 'budgetXoverride.set', 'tenant:school-1', 'h2', 'h3'),
    ('2026-09-30T23:59:59.999Z', 'root', 'ops', 'budget_override.clear', 'tenant:acme', 'h3', 'h4'),
    ('2026-10-01T00:00:00Z', 'root', 'ops', 'budget_override.set', 'tenant:acme', 'h4', 'h5')`;
  await ingestBatch(sql, "b-review", [usageEvent({ tenant_id: "usage-only" })]);
}

async function review(sql: Sql): Promise<AccessReview> {
  await seed(sql);
  return buildAccessReview(sql, { quarter: Q3, now: NOW, defaultBusinessRetentionMonths: 60 });
}

for (const kind of DB_KINDS) {
  Deno.test(`${kind}: access review lists active admin keys and the quarter's audit actors`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const r = await review(sql);
      assert.deepEqual(
        of(r, "admin_key").map((k) => [k.key_id, k.tenant, k.user, k.roles, k.last_used_at]),
        [
          ["k-ann", "acme", "ann", "tenant_admin user", "never"],
          ["k-root", "ops", "root", "admin", "2026-09-30T12:00:00.000Z"],
        ],
        "revoked k-dan and non-admin keys are left out",
      );
      assert.deepEqual(
        of(r, "audit_actor").map((a) => [a.user, a.tenant, a.admin_actions, a.last_action_at]),
        [
          ["root", "ops", "3", "2026-09-30T23:59:59.999Z"],
          ["ann", "acme", "1", "2026-08-15T10:00:00.000Z"],
        ],
        "actions on either side of the quarter do not count",
      );
      assert.equal(r.counts.admin_keys, 2);
      assert.equal(r.counts.audit_actors, 2);
      assert.equal(r.counts.admin_actions, 4);
    });
  });

  Deno.test(`${kind}: access review flags active keys unused for more than 90 days`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const r = await review(sql);
      const keys = Object.fromEntries(of(r, "api_key").map((k) => [k.key_id, k]));
      assert.deepEqual(Object.keys(keys).sort(), [
        "k-ann",
        "k-bob",
        "k-cat",
        "k-dan",
        "k-edge",
        "k-ghost",
        "k-root",
      ]);
      const stale = Object.values(keys).filter((k) => k.stale === "yes").map((k) => k.key_id);
      assert.deepEqual(stale.sort(), ["k-ann", "k-bob"], "never used since 2025; used in June");
      assert.equal(keys["k-edge"].stale, "no", "exactly 90 days is not more than 90");
      assert.equal(keys["k-cat"].stale, "no", "never used but only a month old");
      assert.equal(keys["k-dan"].stale, "no", "revoked keys are not stale");
      assert.equal(keys["k-dan"].revoked_at, "2026-08-01T00:00:00.000Z");
      assert.equal(keys["k-ann"].mode, "byok");
      assert.equal(keys["k-ann"].created_at, "2025-01-01T00:00:00.000Z");
      assert.deepEqual(
        [r.counts.api_keys, r.counts.active_keys, r.counts.stale_keys],
        [7, 6, 2],
      );
    });
  });

  Deno.test(`${kind}: access review shows budgets, active overrides and override actions`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const r = await review(sql);
      const budgets = Object.fromEntries(of(r, "tenant_budget").map((b) => [b.tenant, b]));
      assert.deepEqual(Object.keys(budgets), [
        "acme",
        "biz-default",
        "con-84",
        "school-1",
        "walk-in",
      ]);
      assert.equal(budgets.acme.plan, "pro");
      assert.equal(budgets.acme.daily_budget_usd, "50", "the tenant's own limit wins");
      assert.equal(budgets.acme.monthly_budget_usd, "200", "the plan's limit fills in");
      assert.equal(budgets["con-84"].monthly_budget_usd, "5");
      assert.equal(budgets["biz-default"].daily_budget_usd, "default");
      assert.equal(budgets.acme.override_reason, 'launch "Q3", approved');
      assert.equal(budgets.acme.override_expires_at, "2026-10-05T00:00:00.000Z");
      assert.equal(budgets["school-1"].override_reason, "", "expired overrides are not listed");
      assert.equal(budgets["walk-in"].override_by, "ops|lead", "an override without a tenant row");
      assert.ok(
        r.csv.includes(`"launch ""Q3"", approved"`),
        "a comma and quotes are quoted and doubled",
      );
      assert.ok(r.csv.includes(`"{""daily_budget_usd"":50}"`));
      assert.deepEqual(
        of(r, "override_actions").map((a) => [a.target, a.override_actions, a.actors]),
        [["tenant:acme", "2", "1"]],
        "only budget_override* actions inside the quarter",
      );
      assert.equal(r.counts.active_overrides, 2);
      assert.equal(r.counts.budget_override_actions, 2);
      assert.ok(r.markdown.includes("| walk-in |  |"), r.markdown);
      assert.ok(r.markdown.includes("ops\\|lead"), "pipes are escaped in Markdown tables");
    });
  });

  Deno.test(`${kind}: access review states each tenant's effective retention`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const r = await review(sql);
      assert.deepEqual(
        of(r, "tenant_retention").map((t) => [t.tenant, t.type, t.retention_months, t.basis]),
        [
          ["acme", "business", "36", "tenant setting"],
          ["biz-default", "business", "60", "business default"],
          ["con-84", "consumer", "24", "fixed for consumer"],
          ["ghost", "consumer", "24", "no tenant row: as a consumer"],
          ["ops", "consumer", "24", "no tenant row: as a consumer"],
          ["school-1", "school", "24", "fixed for school"],
          ["usage-only", "consumer", "24", "no tenant row: as a consumer"],
        ],
      );
      assert.equal(r.counts.retention_tenants, 7);
    });
  });

  Deno.test(`${kind}: access review Markdown has the quarter, time and a table per section`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const { markdown, csv } = await review(sql);
      assert.ok(markdown.startsWith("# Access review 2026-Q3\n"));
      assert.ok(
        markdown.includes("Generated 2026-10-01T08:00:00.000Z for 2026-07-01 to 2026-09-30"),
      );
      for (const h of ["## Admins", "## API keys", "## Budgets", "## Retention"]) {
        assert.ok(markdown.includes(`\n${h}\n`), h);
      }
      assert.ok(markdown.includes("| k-ann | acme | ann | tenant_admin user |"));
      assert.ok(markdown.includes("| stale_keys | 2 |"));
      assert.equal(
        csv.split("\n")[0].split(",").slice(0, 3).join(","),
        "section,kind,key_id",
        "section comes first",
      );
      const sections = new Set(records(csv).map((r) => r.section));
      assert.deepEqual([...sections], ["admins", "api_keys", "budgets", "retention"]);
    });
  });

  Deno.test(`${kind}: access review of an empty ledger says none`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const r = await buildAccessReview(sql, {
        quarter: { year: 2026, q: 1 },
        now: NOW,
        defaultBusinessRetentionMonths: 84,
      });
      assert.ok(Object.values(r.counts).every((n) => n === 0), JSON.stringify(r.counts));
      assert.ok(r.markdown.includes("### Active keys with an admin role\n\nNone.\n"));
      assert.equal(records(r.csv).length, 0);
    });
  });
}

Deno.test("quarters: parse, label, previous full quarter, UTC range", () => {
  assert.deepEqual(parseQuarter("2026-Q3"), Q3);
  assert.throws(() => parseQuarter("2026-Q5"), /--quarter must look like 2026-Q3/);
  assert.throws(() => parseQuarter("Q3-2026"), /--quarter/);
  assert.equal(quarterLabel({ year: 2025, q: 4 }), "2025-Q4");
  assert.deepEqual(previousQuarter(new Date("2026-10-01T00:00:00Z")), Q3);
  assert.deepEqual(previousQuarter(new Date("2026-12-31T23:59:59Z")), Q3);
  assert.deepEqual(previousQuarter(new Date("2026-02-10T00:00:00Z")), { year: 2025, q: 4 });
  const q4 = quarterRange({ year: 2025, q: 4 });
  assert.equal(q4.start.toISOString(), "2025-10-01T00:00:00.000Z");
  assert.equal(q4.end.toISOString(), "2026-01-01T00:00:00.000Z");
  assert.throws(() => quarterRange({ year: 2026, q: 0 }), RangeError);
});

Deno.test("report:quarterly defaults to the previous full quarter and rejects a bad one", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const paths = await run(
      ["--out", `${dir}/out`],
      { DATA_DIR: `${dir}/data` },
      new Date("2026-11-15T00:00:00Z"),
    );
    assert.deepEqual(paths, [
      `${dir}/out/access-review-2026-Q3.md`,
      `${dir}/out/access-review-2026-Q3.csv`,
    ]);
    assert.ok((await Deno.readTextFile(paths[0])).startsWith("# Access review 2026-Q3\n"));
    await assert.rejects(run(["--quarter", "2026-Q9"], {}), /--quarter must look like/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("report:quarterly end to end: a subprocess against Postgres writes both files", async () => {
  const pg = await freshPostgres();
  const out = await Deno.makeTempDir();
  try {
    const db = await openDatabase(pg.url, "/nonexistent");
    try {
      await migrate(db.sql);
      await db.sql`INSERT INTO api_keys (id, hash, tenant_id, user_id, roles)
        VALUES ('k-admin', 'h', 'ops', 'root', '{admin}')`;
      await db.sql`INSERT INTO tenants (id, type) VALUES ('biz', 'business')`;
    } finally {
      await db.close();
    }
    const config = `${out}/gateway.json`;
    await Deno.writeTextFile(
      config,
      JSON.stringify({ metering: { retention_business_months: 48 } }),
    );
    const result = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net",
        "--allow-env",
        "--allow-read",
        "--allow-write",
        "scripts/report_quarterly.ts",
        "--quarter",
        "2026-Q3",
        "--out",
        out,
      ],
      cwd: ROOT,
      env: {
        DENO_COVERAGE_DIR: "coverage",
        DATABASE_URL: pg.url,
        DATA_DIR: `${out}/data`,
        GATEWAY_CONFIG: config,
      },
    }).output();
    const stdout = new TextDecoder().decode(result.stdout);
    assert.equal(result.code, 0, new TextDecoder().decode(result.stderr));
    const md = `${out}/access-review-2026-Q3.md`;
    const csv = `${out}/access-review-2026-Q3.csv`;
    assert.deepEqual(stdout.trim().split("\n"), [md, csv]);
    const markdown = await Deno.readTextFile(md);
    assert.ok(markdown.startsWith("# Access review 2026-Q3\n"));
    assert.ok(markdown.includes("| k-admin | ops | root | admin |"));
    const csvText = await Deno.readTextFile(csv);
    assert.ok(csvText.startsWith("section,kind,"));
    const table = records(csvText);
    assert.deepEqual(
      table.filter((r) => r.kind === "admin_key").map((r) => r.key_id),
      ["k-admin"],
    );
    assert.deepEqual(
      table.filter((r) => r.section === "retention").map((r) => [r.tenant, r.retention_months]),
      [["biz", "48"], ["ops", "24"]],
      "the configured business default applies",
    );
    await assert.rejects(Deno.stat(`${out}/data`), Deno.errors.NotFound, "no embedded ledger");
  } finally {
    await Deno.remove(out, { recursive: true });
    await pg.drop();
  }
});
