import assert from "node:assert/strict";
import postgres from "postgres";
import { migrate } from "../../src/db/migrate.ts";
import { ingestBatch } from "../../src/metering/ingest.ts";
import {
  billingRows,
  listEvents,
  managedSpend,
  monthStart,
  tenantTotals,
} from "../../src/metering/ledger.ts";
import type { UsageEvent } from "../../src/metering/usage_event.ts";
import { DB_KINDS, freshPostgres, withDatabase } from "../support/db.ts";
import { micros, usageEvent } from "./_helpers.ts";

const at = (day: string, time = "12:00:00.000") => `${day}T${time}Z`;

/** Sorted newest first by (occurred_at, request_id), as listEvents promises. */
const newestFirst = (events: UsageEvent[]) =>
  [...events].sort((a, b) =>
    a.occurred_at === b.occurred_at
      ? (a.request_id < b.request_id ? 1 : -1)
      : (a.occurred_at < b.occurred_at ? 1 : -1)
  );

/** Events for the list/filter tests: ties on occurred_at, both outcomes, three users, two models. */
function listFixture(): UsageEvent[] {
  const e = (id: string, over: Partial<UsageEvent>) =>
    usageEvent({ request_id: id, tenant_id: "t1", ...over });
  return [
    e("r01", { occurred_at: at("2024-03-01", "08:00:00.000"), user_id: "u1", model: "m-a" }),
    e("r02", { occurred_at: at("2024-03-01", "09:00:00.000"), user_id: "u2", model: "m-b" }),
    e("r03", {
      occurred_at: at("2024-03-01", "09:00:00.000"),
      user_id: "u1",
      model: "m-b",
      success: false,
      error_code: "x",
    }),
    e("r04", { occurred_at: at("2024-03-01", "09:00:00.000"), user_id: "u3", model: "m-a" }),
    e("r05", { occurred_at: at("2024-03-02", "00:00:00.000"), user_id: "u1", model: "m-a" }),
    e("r06", {
      occurred_at: at("2024-03-02", "10:30:00.123"),
      user_id: "u2",
      model: "m-a",
      success: false,
      error_code: "y",
    }),
    e("r07", { occurred_at: at("2024-03-03", "23:59:59.999"), user_id: "u1", model: "m-b" }),
    usageEvent({ request_id: "r08", tenant_id: "t2", occurred_at: at("2024-03-02") }),
  ];
}

for (const kind of DB_KINDS) {
  Deno.test(`${kind}: tenantTotals sums the tenant's rollups over an inclusive day range`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const e = (day: string, over: Partial<UsageEvent> = {}) =>
        usageEvent({ tenant_id: "t1", occurred_at: at(day), ...over });
      await ingestBatch(sql, "b", [
        e("2024-02-29", { input_tokens: 1000 }), // before the range
        e("2024-03-01", {
          input_tokens: 1,
          output_tokens: 2,
          tool_calls_count: 3,
          audio_seconds_in: 0.5,
          audio_seconds_out: 0.25,
          cost_usd: 0.1,
          mode: "managed",
        }),
        e("2024-03-05", {
          input_tokens: 10,
          output_tokens: 20,
          success: false,
          error_code: "z",
          cost_usd: 0.2,
        }),
        e("2024-03-10", { input_tokens: 100, output_tokens: 200, cost_usd: 0.000001 }),
        e("2024-03-11", { input_tokens: 5000 }), // after the range
        usageEvent({ tenant_id: "t2", occurred_at: at("2024-03-05"), input_tokens: 7777 }),
      ]);
      const totals = await tenantTotals(sql, "t1", "2024-03-01", "2024-03-10");
      assert.deepEqual({ ...totals }, {
        requests: 3,
        errors: 1,
        input_tokens: 111,
        output_tokens: 222,
        tool_calls: 3,
        audio_seconds: 0.75,
        cost_usd: 0.300001,
        managed_cost_usd: 0.1,
      });
      const empty = await tenantTotals(sql, "nobody", "2024-03-01", "2024-03-31");
      assert.deepEqual({ ...empty }, {
        requests: 0,
        errors: 0,
        input_tokens: 0,
        output_tokens: 0,
        tool_calls: 0,
        audio_seconds: 0,
        cost_usd: 0,
        managed_cost_usd: 0,
      });
      const oneDay = await tenantTotals(sql, "t1", "2024-03-05", "2024-03-05");
      assert.equal(oneDay.requests, 1);
      assert.equal(oneDay.errors, 1);
    });
  });

  Deno.test(`${kind}: managedSpend: day and month-to-date per tenant, only managed, global day sum`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const m = (tenant: string, day: string, cost: number, mode: "managed" | "byok" = "managed") =>
        usageEvent({ tenant_id: tenant, occurred_at: at(day), cost_usd: cost, mode });
      await ingestBatch(sql, "b", [
        m("a", "2024-02-29", 50), // previous month
        m("a", "2024-03-01", 1.5),
        m("a", "2024-03-14", 0.25),
        m("a", "2024-03-15", 2),
        m("a", "2024-03-15", 0.000001),
        m("a", "2024-03-15", 100, "byok"),
        m("a", "2024-03-16", 40), // after the day
        m("b", "2024-03-02", 3),
        m("b", "2024-03-15", 100, "byok"), // b has no managed spend that day
        m("byok-only", "2024-03-15", 9, "byok"),
        m("future", "2024-03-20", 9),
        m("zero", "2024-03-15", 0),
      ]);
      const spend = await managedSpend(sql, "2024-03-15");
      assert.equal(spend.day, "2024-03-15");
      const byTenant = Object.fromEntries(spend.tenants.map((t) => [t.tenant_id, { ...t }]));
      assert.deepEqual(Object.keys(byTenant).sort(), ["a", "b"], "zero managed spend omitted");
      assert.equal(micros(byTenant.a.day_usd), 2_000_001);
      assert.equal(micros(byTenant.a.month_usd), 3_750_001);
      assert.equal(byTenant.b.day_usd, 0);
      assert.equal(byTenant.b.month_usd, 3);
      assert.equal(micros(spend.global_day_usd), 2_000_001);

      const first = await managedSpend(sql, "2024-03-01");
      assert.deepEqual(first.tenants.map((t) => ({ ...t })), [
        { tenant_id: "a", day_usd: 1.5, month_usd: 1.5 },
      ]);
      assert.equal(first.global_day_usd, 1.5);

      const feb = await managedSpend(sql, "2024-02-29");
      assert.deepEqual(feb.tenants.map((t) => ({ ...t })), [
        { tenant_id: "a", day_usd: 50, month_usd: 50 },
      ]);
      const none = await managedSpend(sql, "2023-01-01");
      assert.deepEqual({ ...none, tenants: [...none.tenants] }, {
        day: "2023-01-01",
        tenants: [],
        global_day_usd: 0,
      });
      assert.equal(monthStart("2024-03-15"), "2024-03-01");
    });
  });

  Deno.test(`${kind}: listEvents filters by tenant, user, model, success and [from, to)`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const events = listFixture();
      await ingestBatch(sql, "b", events);
      const list = async (f: Parameters<typeof listEvents>[1]) =>
        (await listEvents(sql, f)).map((r) => r.request_id);
      const want = (pred: (e: UsageEvent) => boolean) =>
        newestFirst(events.filter(pred)).map((e) => e.request_id);

      assert.deepEqual(await list({ limit: 100 }), want(() => true));
      assert.deepEqual(
        await list({ tenant_id: "t1", limit: 100 }),
        want((e) => e.tenant_id === "t1"),
      );
      assert.deepEqual(await list({ tenant_id: "t2", limit: 100 }), ["r08"]);
      assert.deepEqual(
        await list({ tenant_id: "t1", user_id: "u1", limit: 100 }),
        want((e) => e.tenant_id === "t1" && e.user_id === "u1"),
      );
      assert.deepEqual(
        await list({ tenant_id: "t1", model: "m-b", limit: 100 }),
        ["r07", "r03", "r02"],
      );
      assert.deepEqual(await list({ tenant_id: "t1", success: false, limit: 100 }), ["r06", "r03"]);
      assert.deepEqual(
        await list({ tenant_id: "t1", success: true, limit: 100 }),
        want((e) => e.tenant_id === "t1" && e.success),
      );
      assert.deepEqual(
        await list({
          tenant_id: "t1",
          from: "2024-03-01T09:00:00.000Z",
          to: "2024-03-02T10:30:00.123Z",
          limit: 100,
        }),
        ["r05", "r04", "r03", "r02"],
        "from inclusive, to exclusive",
      );
      assert.deepEqual(
        await list({ tenant_id: "t1", user_id: "u1", model: "m-a", success: true, limit: 100 }),
        ["r05", "r01"],
      );
      assert.deepEqual(await list({ tenant_id: "t1", limit: 3 }), ["r07", "r06", "r05"]);

      const [row] = await listEvents(sql, {
        tenant_id: "t1",
        user_id: "u2",
        success: false,
        limit: 1,
      });
      const { lane: _lane, ...r06 } = events[5];
      assert.deepEqual({ ...row }, r06, "every field, cost as a number, ISO time");
    });
  });

  Deno.test(`${kind}: listEvents keyset pages of 2 cover every row once, newest first`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const events = listFixture();
      await ingestBatch(sql, "b", events);
      for (const filter of [{}, { tenant_id: "t1" }, { tenant_id: "t1", user_id: "u1" }]) {
        const pages: string[][] = [];
        let after: { occurred_at: string; request_id: string } | undefined;
        for (let i = 0; i < 20; i++) {
          const page = await listEvents(sql, { ...filter, after, limit: 2 });
          if (page.length === 0) break;
          assert.ok(page.length <= 2);
          pages.push(page.map((r) => r.request_id));
          const last = page[page.length - 1];
          after = { occurred_at: last.occurred_at, request_id: last.request_id };
        }
        const all = (await listEvents(sql, { ...filter, limit: 100 })).map((r) => r.request_id);
        assert.deepEqual(pages.flat(), all, `filter ${JSON.stringify(filter)}`);
        assert.equal(new Set(all).size, all.length);
        const expected = newestFirst(
          events.filter((e) =>
            Object.entries(filter).every(([k, v]) => e[k as keyof UsageEvent] === v)
          ),
        ).map((e) => e.request_id);
        assert.deepEqual(all, expected);
        assert.ok(pages.length >= Math.ceil(expected.length / 2));
      }
    });
  });

  Deno.test(`${kind}: billingRows: per day, model and lane for one month`, async () => {
    await withDatabase(kind, async ({ sql }) => {
      const e = (day: string, time: string, over: Partial<UsageEvent>) =>
        usageEvent({ tenant_id: "t1", occurred_at: at(day, time), ...over });
      await ingestBatch(sql, "b", [
        e("2024-02-29", "23:59:59.999", { model: "m-a" }), // previous month
        e("2024-03-01", "00:00:00.000", {
          model: "m-a",
          mode: "managed",
          input_tokens: 1,
          output_tokens: 2,
          tool_calls_count: 1,
          audio_seconds_in: 0.5,
          cost_usd: 0.000001,
        }),
        e("2024-03-01", "13:00:00.000", {
          model: "m-a",
          mode: "managed",
          input_tokens: 10,
          output_tokens: 20,
          audio_seconds_out: 0.25,
          cost_usd: 0.000002,
        }),
        e("2024-03-01", "14:00:00.000", { model: "m-a", mode: "byok", cost_usd: 0.5 }),
        e("2024-03-01", "15:00:00.000", {
          model: null,
          mode: "managed",
          success: false,
          error_code: "x",
          cost_usd: 0,
          input_tokens: 0,
          output_tokens: 0,
        }),
        e("2024-03-31", "23:59:59.999", { model: "m-b", mode: "byok", cost_usd: 1 }),
        e("2024-04-01", "00:00:00.000", { model: "m-b" }), // next month
        usageEvent({ tenant_id: "t2", occurred_at: at("2024-03-01"), model: "m-a" }),
      ]);
      const rows = (await billingRows(sql, "t1", "2024-03")).map((r) => ({ ...r }));
      assert.deepEqual(rows, [
        {
          day: "2024-03-01",
          model: "m-a",
          mode: "byok",
          requests: 1,
          input_tokens: 10,
          output_tokens: 20,
          tool_calls: 0,
          audio_seconds: 0,
          cost_usd: "0.500000",
        },
        {
          day: "2024-03-01",
          model: "m-a",
          mode: "managed",
          requests: 2,
          input_tokens: 11,
          output_tokens: 22,
          tool_calls: 1,
          audio_seconds: 0.75,
          cost_usd: "0.000003",
        },
        {
          day: "2024-03-01",
          model: "unknown",
          mode: "managed",
          requests: 1,
          input_tokens: 0,
          output_tokens: 0,
          tool_calls: 0,
          audio_seconds: 0,
          cost_usd: "0.000000",
        },
        {
          day: "2024-03-31",
          model: "m-b",
          mode: "byok",
          requests: 1,
          input_tokens: 10,
          output_tokens: 20,
          tool_calls: 0,
          audio_seconds: 0,
          cost_usd: "1.000000",
        },
      ]);
      assert.deepEqual(
        (await billingRows(sql, "t1", "2024-02")).map((r) => r.day),
        ["2024-02-29"],
      );
      assert.deepEqual((await billingRows(sql, "t1", "2024-05")).length, 0);
    });
  });
}

Deno.test("postgres: billingRows uses UTC month bounds whatever the session time zone", async () => {
  // The day column is the UTC day; the month bounds must be UTC too, or a
  // server (or role) with another TimeZone setting moves events across months.
  const pg = await freshPostgres();
  const sql = postgres(pg.url, {
    max: 1,
    onnotice: () => {},
    connection: { TimeZone: "America/New_York" },
  });
  try {
    await migrate(sql);
    const [tz] = await sql`SHOW timezone`;
    assert.equal(tz.TimeZone, "America/New_York");
    await ingestBatch(sql, "b", [
      usageEvent({ tenant_id: "t1", occurred_at: "2024-03-01T02:00:00.000Z" }),
      usageEvent({ tenant_id: "t1", occurred_at: "2024-03-31T23:00:00.000Z" }),
      usageEvent({ tenant_id: "t1", occurred_at: "2024-04-01T02:00:00.000Z" }),
    ]);
    const march = await billingRows(sql, "t1", "2024-03");
    assert.deepEqual(
      march.map((r) => [r.day, r.requests]),
      [["2024-03-01", 1], ["2024-03-31", 1]],
    );
    const april = await billingRows(sql, "t1", "2024-04");
    assert.deepEqual(april.map((r) => [r.day, r.requests]), [["2024-04-01", 1]]);
  } finally {
    await sql.end();
    await pg.drop();
  }
});
