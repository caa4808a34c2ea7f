import assert from "node:assert/strict";
import type { Sql } from "../../src/db/client.ts";
import { signBody } from "../../src/metering/signature.ts";
import type { DbKind } from "../support/db.ts";
import { type TestGateway, withFullGateway } from "../support/gateway.ts";

const SECRET = "usage-http-metering-secret";
const A = "tenant-a";
const B = "tenant-b";
const DAILY_BUDGET = 10;
const MONTHLY_BUDGET = 200;

/** A full gateway (edge + aggregator in one process) on a fresh ledger of the given kind. */
function withGateway(kind: DbKind, fn: (gw: TestGateway) => Promise<void>) {
  return withFullGateway(
    {
      metering: { secret: SECRET, shutdown_flush_ms: 2_000 },
      models: {
        "convergio-demo": {
          deployments: [{ provider: "demo", model: "demo-large" }],
          price: { input_per_1m: 1000, output_per_1m: 2000 },
        },
      },
      tenant_defaults: {
        rpm: 100,
        tpm: 1_000_000,
        daily_budget_usd: DAILY_BUDGET,
        monthly_budget_usd: MONTHLY_BUDGET,
      },
      tenants: { [B]: { limits: { rpm: 2 } } },
    },
    fn,
    kind,
  );
}

function post(gw: TestGateway, path: string, token: string, body: unknown, requestId: string) {
  return fetch(`${gw.url}${path}`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${token}`,
      "content-type": "application/json",
      "x-request-id": requestId,
    },
    body: JSON.stringify(body),
  });
}

async function get(gw: TestGateway, path: string, token: string) {
  const res = await fetch(`${gw.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
  const text = await res.text();
  const json = res.headers.get("content-type")?.includes("json") ? JSON.parse(text) : undefined;
  return { status: res.status, headers: res.headers, text, json };
}

const chat = (prompt: string) => ({ prompt });
const completion = (model: string) => ({
  model,
  messages: [{ role: "user", content: "hi there" }],
});

/** What each request of the traffic below is expected to produce. */
const TRAFFIC = [
  { id: "req-a1", tenant: A, user: "alice", mode: "managed", status: 200 },
  { id: "req-a2", tenant: A, user: "alice", mode: "managed", status: 200 },
  { id: "req-a3", tenant: A, user: "anna", mode: "byok", status: 200 },
  { id: "req-a4", tenant: A, user: "alice", mode: "managed", status: 400 },
  { id: "req-b1", tenant: B, user: "bob", mode: "managed", status: 200 },
  { id: "req-b2", tenant: B, user: "bob", mode: "byok", status: 200 },
  { id: "req-b3", tenant: B, user: "bob", mode: "managed", status: 429 },
] as const;

/** Sends the traffic of TRAFFIC, checks each status, and waits until the ledger has it all. */
async function sendTraffic(gw: TestGateway) {
  const token = (t: (typeof TRAFFIC)[number]) =>
    gw.token({ tenant: t.tenant, user: t.user, mode: t.mode });
  const bodies: Record<string, [string, unknown]> = {
    "req-a1": ["/v1/chat", chat("hello from alice")],
    "req-a2": ["/v1/chat/completions", completion("convergio-demo")],
    "req-a3": ["/v1/chat", chat("hello from anna, on her own key")],
    "req-a4": ["/v1/chat/completions", completion("no-such-model")],
    "req-b1": ["/v1/chat", chat("hello from bob")],
    "req-b2": ["/v1/chat", chat("bob again, byok")],
    "req-b3": ["/v1/chat", chat("one too many for bob's tenant")],
  };
  for (const t of TRAFFIC) {
    const [path, body] = bodies[t.id];
    const res = await post(gw, path, await token(t), body, t.id);
    const json = await res.json();
    assert.equal(res.status, t.status, `${t.id}: ${JSON.stringify(json)}`);
    assert.equal(res.headers.get("x-request-id"), t.id);
    if (t.status === 400) assert.equal(json.error.code, "request.invalid");
    if (t.status === 429) assert.equal(json.error.code, "quota.exceeded");
  }
  await gw.runtime.batcher!.drain();
}

interface LedgerTotals {
  requests: number;
  errors: number;
  input_tokens: number;
  output_tokens: number;
  cost_usd: number;
  managed_cost_usd: number;
}

/** A tenant's totals straight from the usage_events table, independent of the rollups. */
async function ledgerTotals(sql: Sql, tenant: string): Promise<LedgerTotals> {
  const [row] = await sql`
    SELECT count(*)::int AS requests, (count(*) FILTER (WHERE NOT success))::int AS errors,
      coalesce(sum(input_tokens), 0)::int AS input_tokens,
      coalesce(sum(output_tokens), 0)::int AS output_tokens,
      coalesce(sum(cost_usd), 0)::text AS cost_usd,
      coalesce(sum(cost_usd) FILTER (WHERE mode = 'managed'), 0)::text AS managed_cost_usd
    FROM usage_events WHERE tenant_id = ${tenant}`;
  return {
    requests: row.requests,
    errors: row.errors,
    input_tokens: row.input_tokens,
    output_tokens: row.output_tokens,
    cost_usd: Number(row.cost_usd),
    managed_cost_usd: Number(row.managed_cost_usd),
  };
}

const close = (a: number, b: number) => Math.abs(a - b) < 1e-9;

for (const kind of ["postgres", "pglite"] as const) {
  Deno.test(`usage (${kind}): /v1/usage/current shows the caller's tenant only, and the ledger has one row per request`, async () => {
    await withGateway(kind, async (gw) => {
      await sendTraffic(gw);
      const sql = gw.runtime.db!.sql;

      // Exactly one ledger row per request sent, refused ones included.
      const rows = await sql<{ request_id: string; success: boolean; error_code: string | null }[]>`
        SELECT request_id, success, error_code FROM usage_events ORDER BY request_id`;
      assert.equal(rows.length, TRAFFIC.length);
      assert.deepEqual(rows.map((r) => r.request_id), TRAFFIC.map((t) => t.id).sort());
      const byId = new Map(rows.map((r) => [r.request_id, r]));
      assert.deepEqual(
        { ...byId.get("req-a4") },
        { request_id: "req-a4", success: false, error_code: "request.invalid" },
      );
      assert.deepEqual(
        { ...byId.get("req-b3") },
        { request_id: "req-b3", success: false, error_code: "quota.exceeded" },
      );

      const a = await ledgerTotals(sql, A);
      const b = await ledgerTotals(sql, B);
      assert.equal(a.requests, 4);
      assert.equal(a.errors, 1);
      assert.equal(b.requests, 3);
      assert.ok(a.managed_cost_usd > 0 && a.managed_cost_usd < a.cost_usd, "A has both lanes");
      assert.ok(b.cost_usd > 0);

      const alice = await gw.token({ tenant: A, user: "alice", mode: "managed" });
      const res = await get(gw, "/v1/usage/current", alice);
      assert.equal(res.status, 200, res.text);
      const body = res.json;
      const today = new Date().toISOString().slice(0, 10);
      assert.equal(body.tenant_id, A);
      assert.equal(body.day.date, today);
      assert.equal(body.month.month, today.slice(0, 7));
      for (const period of [body.day, body.month]) {
        assert.equal(period.requests, a.requests);
        assert.equal(period.errors, a.errors);
        assert.equal(period.input_tokens, a.input_tokens);
        assert.equal(period.output_tokens, a.output_tokens);
        assert.ok(close(period.cost_usd, a.cost_usd), `${period.cost_usd} vs ${a.cost_usd}`);
        assert.ok(close(period.managed_cost_usd, a.managed_cost_usd));
        // Never B's.
        assert.notEqual(period.requests, a.requests + b.requests);
      }
      assert.ok(close(body.day.budget.spent_usd, a.managed_cost_usd));
      assert.equal(body.day.budget.budget_usd, DAILY_BUDGET);
      assert.ok(close(body.day.budget.fraction, a.managed_cost_usd / DAILY_BUDGET));
      assert.equal(body.day.budget.action, "none");
      assert.equal(body.month.budget.budget_usd, MONTHLY_BUDGET);
      assert.ok(close(body.month.budget.fraction, a.managed_cost_usd / MONTHLY_BUDGET));
      assert.equal(body.month.budget.action, "none");

      // B's own view has B's numbers.
      const bob = await get(
        gw,
        "/v1/usage/current",
        await gw.token({ tenant: B, user: "bob", mode: "byok" }),
      );
      assert.equal(bob.json.tenant_id, B);
      assert.equal(bob.json.day.requests, b.requests);
      assert.equal(bob.json.day.errors, 1);
      assert.ok(close(bob.json.day.cost_usd, b.cost_usd));

      const anonymous = await fetch(`${gw.url}/v1/usage/current`);
      assert.equal(anonymous.status, 401);
      await anonymous.body?.cancel();
    });
  });
}

Deno.test("usage: /v1/usage/events is scoped by role, filters, and pages exactly once", async () => {
  await withGateway("postgres", async (gw) => {
    await sendTraffic(gw);
    const user = await gw.token({ tenant: A, user: "alice", roles: ["user"] });
    const tenantAdmin = await gw.token({ tenant: A, user: "boss", roles: ["tenant_admin"] });
    const admin = await gw.token({ tenant: "platform", user: "root", roles: ["admin"] });
    const ids = (r: { json: { data: Array<{ request_id: string }> } }) =>
      r.json.data.map((e) => e.request_id).sort();

    const forbidden = await get(gw, "/v1/usage/events", user);
    assert.equal(forbidden.status, 403);
    assert.equal(forbidden.json.error.code, "auth.forbidden");

    const own = await get(gw, "/v1/usage/events", tenantAdmin);
    assert.equal(own.status, 200, own.text);
    assert.deepEqual(ids(own), ["req-a1", "req-a2", "req-a3", "req-a4"]);
    assert.ok(own.json.data.every((e: { tenant_id: string }) => e.tenant_id === A));
    assert.equal(own.json.next_cursor, null);
    const ownExplicit = await get(gw, `/v1/usage/events?tenant_id=${A}`, tenantAdmin);
    assert.deepEqual(ids(ownExplicit), ids(own));
    const other = await get(gw, `/v1/usage/events?tenant_id=${B}`, tenantAdmin);
    assert.equal(other.status, 403);
    assert.equal(other.json.error.code, "auth.forbidden");

    const all = await get(gw, "/v1/usage/events?limit=1000", admin);
    assert.equal(all.status, 200);
    assert.equal(all.json.data.length, TRAFFIC.length);
    // Newest first.
    const times = all.json.data.map((e: { occurred_at: string }) => Date.parse(e.occurred_at));
    assert.deepEqual(times, [...times].sort((x: number, y: number) => y - x));

    assert.deepEqual(ids(await get(gw, `/v1/usage/events?tenant_id=${B}`, admin)), [
      "req-b1",
      "req-b2",
      "req-b3",
    ]);
    assert.deepEqual(ids(await get(gw, "/v1/usage/events?user_id=alice", admin)), [
      "req-a1",
      "req-a2",
      "req-a4",
    ]);
    assert.deepEqual(
      ids(await get(gw, `/v1/usage/events?tenant_id=${B}&user_id=alice`, admin)),
      [],
    );
    assert.deepEqual(
      ids(await get(gw, "/v1/usage/events?model=convergio-demo", admin)),
      ["req-a1", "req-a2", "req-a3", "req-b1", "req-b2"],
    );
    const failed = await get(gw, "/v1/usage/events?success=false", admin);
    assert.deepEqual(ids(failed), ["req-a4", "req-b3"]);
    for (const e of failed.json.data) {
      assert.equal(e.success, false);
      assert.ok(e.error_code);
    }
    assert.equal(
      (await get(gw, "/v1/usage/events?success=true", admin)).json.data.length,
      TRAFFIC.length - 2,
    );

    // from is inclusive, to exclusive.
    const newest = all.json.data[0].occurred_at as string;
    const oldest = all.json.data[all.json.data.length - 1].occurred_at as string;
    const atNewest = all.json.data.filter((e: { occurred_at: string }) =>
      e.occurred_at === newest
    ).length;
    const atOldest =
      all.json.data.filter((e: { occurred_at: string }) => e.occurred_at === oldest).length;
    const q = (from: string, to?: string) =>
      `/v1/usage/events?from=${encodeURIComponent(from)}${
        to ? `&to=${encodeURIComponent(to)}` : ""
      }`;
    assert.equal((await get(gw, q(newest), admin)).json.data.length, atNewest);
    assert.equal(
      (await get(gw, q(oldest, newest), admin)).json.data.length,
      TRAFFIC.length - atNewest,
    );
    assert.equal(
      (await get(gw, q("2000-01-01T00:00:00Z", oldest), admin)).json.data.length,
      0,
    );
    assert.equal(
      (await get(gw, q(oldest), admin)).json.data.length,
      TRAFFIC.length,
    );
    assert.ok(atOldest >= 1);
    assert.equal((await get(gw, q("2999-01-01T00:00:00Z"), admin)).json.data.length, 0);

    // Keyset pagination walks every row exactly once, in the same order.
    const walked: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page: Awaited<ReturnType<typeof get>> = await get(
        gw,
        `/v1/usage/events?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`,
        admin,
      );
      assert.equal(page.status, 200, page.text);
      assert.ok(page.json.data.length <= 2);
      walked.push(...page.json.data.map((e: { request_id: string }) => e.request_id));
      cursor = page.json.next_cursor;
      pages++;
      assert.ok(pages <= TRAFFIC.length + 1, "pagination does not end");
    } while (cursor);
    assert.deepEqual(walked, all.json.data.map((e: { request_id: string }) => e.request_id));
    assert.equal(new Set(walked).size, TRAFFIC.length);

    for (
      const bad of [
        "cursor=not-a-cursor!",
        `cursor=${btoa(JSON.stringify({ a: 1 }))}`,
        "limit=0",
        "limit=1001",
        "success=maybe",
        "from=yesterday",
        "unknown=1",
      ]
    ) {
      const res = await get(gw, `/v1/usage/events?${bad}`, admin);
      assert.equal(res.status, 400, bad);
      assert.equal(res.json.error.code, "request.invalid", bad);
    }
  });
});

Deno.test("usage: billing.csv has per day/model/lane rows and a total equal to their sum", async () => {
  await withGateway("postgres", async (gw) => {
    await sendTraffic(gw);
    const sql = gw.runtime.db!.sql;
    const month = new Date().toISOString().slice(0, 7);
    const today = new Date().toISOString().slice(0, 10);
    const tenantAdmin = await gw.token({ tenant: A, user: "boss", roles: ["tenant_admin"] });
    const admin = await gw.token({ tenant: "platform", user: "root", roles: ["admin"] });

    const res = await get(gw, `/v1/usage/billing.csv?month=${month}`, tenantAdmin);
    assert.equal(res.status, 200, res.text);
    assert.match(res.headers.get("content-type") ?? "", /^text\/csv/);
    assert.match(res.headers.get("content-disposition") ?? "", new RegExp(`billing-${A}-${month}`));
    const lines = res.text.trimEnd().split("\n");
    assert.equal(
      lines[0],
      "tenant_id,day,model,lane,requests,input_tokens,output_tokens,tool_calls,audio_seconds,cost_usd",
    );
    const rows = lines.slice(1, -1).map((l) => l.split(","));
    const total = lines[lines.length - 1].split(",");
    assert.deepEqual(
      rows.map((r) => [r[0], r[1], r[2], r[3], r[4]]),
      [
        [A, today, "convergio-demo", "byok", "1"],
        [A, today, "convergio-demo", "managed", "2"],
        [A, today, "unknown", "managed", "1"],
      ],
    );
    assert.deepEqual(total.slice(0, 9), [A, "total", "", "", "", "", "", "", ""]);
    const micro = (s: string) => Math.round(Number(s) * 1e6);
    const sum = rows.reduce((acc, r) => acc + micro(r[9]), 0);
    assert.equal(micro(total[9]), sum);
    assert.match(total[9], /^\d+\.\d{6}$/);
    assert.equal(sum, micro(String((await ledgerTotals(sql, A)).cost_usd)));
    assert.equal(
      rows.reduce((acc, r) => acc + Number(r[5]), 0),
      (await ledgerTotals(sql, A)).input_tokens,
    );

    const forB = await get(gw, `/v1/usage/billing.csv?month=${month}&tenant_id=${B}`, tenantAdmin);
    assert.equal(forB.status, 403);
    assert.equal(forB.json.error.code, "auth.forbidden");
    const asUser = await get(
      gw,
      `/v1/usage/billing.csv?month=${month}`,
      await gw.token({ tenant: A, user: "alice" }),
    );
    assert.equal(asUser.status, 403);

    const adminB = await get(gw, `/v1/usage/billing.csv?month=${month}&tenant_id=${B}`, admin);
    assert.equal(adminB.status, 200);
    const bLines = adminB.text.trimEnd().split("\n");
    assert.ok(bLines.slice(1).every((l) => l.startsWith(`${B},`)));
    assert.equal(
      micro(bLines[bLines.length - 1].split(",")[9]),
      micro(String((await ledgerTotals(sql, B)).cost_usd)),
    );

    const empty = await get(gw, "/v1/usage/billing.csv?month=2001-01", tenantAdmin);
    assert.equal(empty.status, 200);
    assert.deepEqual(empty.text.trimEnd().split("\n").slice(1), [
      `${A},total,,,,,,,,0.000000`,
    ]);

    for (const bad of ["month=2024-13", "month=2024-1", "month=", "", "month=2024-01&x=1"]) {
      const r = await get(gw, `/v1/usage/billing.csv?${bad}`, tenantAdmin);
      assert.equal(r.status, 400, bad);
      assert.equal(r.json.error.code, "request.invalid", bad);
    }
  });
});

Deno.test("usage: /v1/usage/current maps managed spend to the budget thresholds, BYOK excluded", async () => {
  await withGateway("postgres", async (gw) => {
    const now = new Date().toISOString();
    const event = (request_id: string, tenant_id: string, cost_usd: number, mode = "managed") => ({
      request_id,
      tenant_id,
      user_id: "u1",
      session_id: null,
      provider: "demo",
      model: "convergio-demo",
      input_tokens: 1,
      output_tokens: 1,
      tool_calls_count: 0,
      audio_seconds_in: 0,
      audio_seconds_out: 0,
      latency_ms: 1,
      success: true,
      error_code: null,
      mode,
      lane: mode,
      cost_usd,
      occurred_at: now,
    });
    // Daily budget 10: 0.5, 8.5, 9.5 and 11.5 USD are none, alert, downgrade and block.
    const cases = [
      ["t-none", 5, "none"],
      ["t-alert", 85, "alert"],
      ["t-down", 95, "downgrade"],
      ["t-block", 115, "block"],
    ] as const;
    const events = cases.flatMap(([tenant, tenths]) => [
      event(`${tenant}-m`, tenant, tenths / 10),
      event(`${tenant}-b`, tenant, 1000, "byok"),
    ]);
    const body = JSON.stringify({ batch_id: "b-budget", events });
    const ingest = await fetch(`${gw.url}/internal/metering/batches`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-convergio-signature": await signBody(SECRET, body, Date.now()),
      },
      body,
    });
    assert.equal(ingest.status, 200);
    assert.equal((await ingest.json()).accepted, events.length);

    for (const [tenant, tenths, action] of cases) {
      const res = await get(gw, "/v1/usage/current", await gw.token({ tenant }));
      assert.equal(res.status, 200, res.text);
      const { day, month } = res.json;
      assert.equal(day.requests, 2, tenant);
      assert.ok(close(day.cost_usd, 1000 + tenths / 10), tenant);
      assert.ok(close(day.managed_cost_usd, tenths / 10), tenant);
      assert.ok(close(day.budget.spent_usd, tenths / 10), tenant);
      assert.ok(close(day.budget.fraction, tenths / 10 / DAILY_BUDGET), tenant);
      assert.equal(day.budget.action, action, tenant);
      assert.ok(close(month.budget.fraction, tenths / 10 / MONTHLY_BUDGET), tenant);
      assert.equal(month.budget.action, "none", tenant);
    }
  });
});
