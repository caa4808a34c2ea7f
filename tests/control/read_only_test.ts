/**
 * RB-5 against a Postgres the test really stops and starts again: admin
 * writes answer 503 db.read_only, reads the snapshot holds are served from
 * it, traffic goes on, usage waits in the edge's spool, and when the database
 * is back everything resumes by itself, with each spooled event in the
 * ledger exactly once.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { periodsAt } from "../../src/budget/store.ts";
import { signBody } from "../../src/metering/signature.ts";
import { startGateway, testConfig, type TestGateway } from "../support/gateway.ts";
import { type PgCluster, startPgCluster } from "../support/pg_cluster.ts";
import {
  adminToken,
  assertReadOnly,
  assertWritesRefusedReadsCached,
  audit,
  call,
  chat,
  type HasUrl,
  metric,
  mitigationState,
  mustApply,
  served,
  waitUntil,
} from "../support/control_e2e.ts";

const SECRET = "read-only-test-metering-secret";

/** Metering that retries fast, so recovery shows within the wait. */
const metering = {
  secret: SECRET,
  flush_interval_ms: 100,
  retry_base_ms: 50,
  retry_max_ms: 200,
  shutdown_flush_ms: 2_000,
};

const models = {
  "convergio-demo": {
    deployments: [{ provider: "demo", model: "demo-large" }],
    price: { input_per_1m: 2, output_per_1m: 8 },
  },
  "convergio-mini": {
    deployments: [{ provider: "demo", model: "demo-mini" }],
    price: { input_per_1m: 1, output_per_1m: 1 },
  },
};

/** Rows of usage_events per request id, read on a connection of its own. */
async function ledgerCounts(cluster: PgCluster, ids: string[]): Promise<Record<string, number>> {
  const sql = postgres(cluster.url, { max: 1, onnotice: () => {} });
  try {
    const rows = await sql<{ request_id: string; n: number }[]>`
      SELECT request_id, count(*)::int AS n FROM usage_events
      WHERE request_id = ANY(${ids}) GROUP BY request_id`;
    return Object.fromEntries(rows.map((r) => [r.request_id, r.n]));
  } finally {
    await sql.end();
  }
}

async function totalEvents(cluster: PgCluster): Promise<number> {
  const sql = postgres(cluster.url, { max: 1, onnotice: () => {} });
  try {
    const [{ n }] = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM usage_events`;
    return n;
  } finally {
    await sql.end();
  }
}

const putTenant = (gw: HasUrl, token: string, id: string) =>
  call(gw, "PUT", `/admin/tenants/${id}`, {
    token,
    body: { type: "business", reason: `onboard ${id}` },
  });

const spooled = (gw: HasUrl) => metric(gw, "convergio_metering_spool_events");

/** Chats that must succeed, with these request ids. */
async function chats(gw: HasUrl, token: string, ids: string[]): Promise<void> {
  for (const id of ids) {
    const s = await served(gw, token, { prompt: `hello ${id}` }, id);
    assert.equal(s.reply.json.request_id, id);
  }
}

Deno.test("RB-5: role all through a real database outage, recovering by itself", async () => {
  const cluster = await startPgCluster();
  const dataDir = await Deno.makeTempDir({ prefix: "cvg-rb5-" });
  let gw: TestGateway | undefined;
  try {
    gw = await startGateway(testConfig({
      role: "all",
      data_dir: dataDir,
      database_url: cluster.url,
      metering,
      models,
      tenants: { acme: { downgrade_model: "convergio-mini" } },
      control: {
        db_probe_ms: 200,
        autopilot: { interval_ms: 3_600_000, spend_downgrade: { enabled: true } },
      },
    }));
    const admin = await adminToken(gw);
    const user = await gw.token({ tenant: "acme", mode: "managed" });

    // Before: writes, traffic and ingest all work.
    const before = await putTenant(gw, admin, "before");
    assert.equal(before.status, 200, before.text);
    await chats(gw, user, ["rb5-before"]);
    await gw.runtime.batcher!.drain();
    assert.deepEqual(await ledgerCounts(cluster, ["rb5-before"]), { "rb5-before": 1 });

    await cluster.stop();

    // Admin writes are refused at once, mitigations included: there is nowhere to write.
    assertReadOnly(await putTenant(gw, admin, "during"), "PUT /admin/tenants/during");
    assertReadOnly(
      await call(gw, "POST", "/admin/mitigations/disable_tools", {
        token: admin,
        body: { reason: "cannot be stored now" },
      }),
      "POST /admin/mitigations/disable_tools",
    );
    // What the snapshot holds is served from it; the rest is read-only too.
    await assertWritesRefusedReadsCached(gw, admin, ["before"]);
    assert.equal(await mitigationState(gw, admin, "disable_tools"), null);
    assertReadOnly(await call(gw, "GET", "/admin/audit", { token: admin }), "GET /admin/audit");

    // Traffic goes on.
    const down = ["rb5-down-1", "rb5-down-2", "rb5-down-3"];
    await chats(gw, user, down);

    // Ingest refuses batches, so the edge keeps them spooled and retries.
    const body = JSON.stringify({ batch_id: "probe", events: [{}] });
    const ingest = await fetch(`${gw.url}/internal/metering/batches`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-convergio-signature": await signBody(SECRET, body, Date.now()),
      },
      body,
    });
    const refused = await ingest.json();
    assert.equal(ingest.status, 503);
    assert.equal(refused.error.code, "db.read_only");
    // The autopilot cannot store a mitigation either: it fails, and tries again next tick.
    const day = {
      scope: "global" as const,
      period: "day" as const,
      bucket: periodsAt(Date.now()).day,
    };
    await gw.deps.edge!.store.setSpend(day, 85_000_000);
    await gw.runtime.autopilot!.tick();
    assert.equal(await mitigationState(gw, admin, "enforce_downgrade"), null);
    assert.ok(gw.logs.some((l) => l.msg === "autopilot action failed"));
    gw.runtime.batcher!.flush();
    const gwUp = gw;
    await waitUntil(
      async () =>
        (await spooled(gwUp)) === down.length &&
        (await metric(gwUp, "convergio_metering_batches_total", { outcome: "retry" })) >= 1,
      "the batch spooled and retried",
    );

    await cluster.start();

    // Nothing restarts: the probe notices the database and writes work again.
    await waitUntil(
      async () => (await putTenant(gwUp, admin, "after")).status === 200,
      "admin writes accepted again",
    );
    await waitUntil(async () => (await spooled(gwUp)) === 0, "the spool drained");
    await gw.runtime.batcher!.drain();
    assert.deepEqual(
      await ledgerCounts(cluster, down),
      Object.fromEntries(down.map((id) => [id, 1])),
      "each spooled event landed once",
    );
    assert.equal(await totalEvents(cluster), 1 + down.length);

    // The autopilot's next tick stores what it could not during the outage.
    await gw.runtime.autopilot!.tick();
    assert.equal((await mitigationState(gw, admin, "enforce_downgrade"))?.actor, "autopilot");
    assert.equal((await served(gw, user)).model, "convergio-mini");

    // The audit log has the accepted writes, not the refused ones, and its chain holds.
    const rows = await audit(gw, admin, { action: "tenant." });
    assert.deepEqual(rows.map((r) => r.target), ["tenant:after", "tenant:before"]);
    const mitigations = await audit(gw, admin, { action: "mitigation." });
    assert.deepEqual(mitigations.map((r) => [r.action, r.actor, r.target]), [
      ["mitigation.apply", "autopilot", "mitigation:enforce_downgrade"],
    ]);
    const verify = await call(gw, "GET", "/admin/audit/verify", { token: admin });
    assert.equal(verify.status, 200, verify.text);
    assert.equal(verify.json.ok, true);
    assert.equal(verify.json.rows, 3);
    // And the snapshot moved on.
    const after = await call(gw, "GET", "/admin/tenants", { token: admin });
    assert.deepEqual(after.json.tenants.map((t: { id: string }) => t.id).sort(), [
      "after",
      "before",
    ]);
  } finally {
    await gw?.close();
    await cluster.destroy();
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("RB-5 role split: the aggregator's database is down; the edge serves on its cached snapshot", async () => {
  const cluster = await startPgCluster();
  const aggDir = await Deno.makeTempDir({ prefix: "cvg-rb5-agg-" });
  const edgeDir = await Deno.makeTempDir({ prefix: "cvg-rb5-edge-" });
  let aggregator: TestGateway | undefined;
  let edge: TestGateway | undefined;
  try {
    aggregator = await startGateway(testConfig({
      role: "aggregator",
      data_dir: aggDir,
      database_url: cluster.url,
      metering: { secret: SECRET },
      models,
      control: { db_probe_ms: 200 },
    }));
    edge = await startGateway(
      testConfig({
        role: "edge",
        data_dir: edgeDir,
        metering: { ...metering, aggregator_url: aggregator.url },
        models,
        control: { poll_interval_ms: 100 },
      }),
      // The edge runs its real batcher, not the collector startGateway puts on edges.
      { meter: undefined },
    );
    const e = edge;
    const admin = await adminToken(edge);
    const user = await edge.token({ tenant: "acme", mode: "managed" });

    // A change made on the aggregator reaches the edge by its poll.
    await mustApply(aggregator, admin, "lower_model", {
      params: { to: "convergio-mini" },
      reason: "RB-2 drill before the outage",
    });
    const tools = await call(aggregator, "PUT", "/admin/tenants/acme/tools", {
      token: admin,
      body: { tools: ["get_time"], reason: "acme may only tell the time" },
    });
    assert.equal(tools.status, 200, tools.text);
    // Once the edge has both changes, the aggregator has built the snapshot that holds them.
    await waitUntil(
      async () =>
        e.deps.edge!.control.tools("acme")?.join() === "get_time" &&
        (await served(e, user)).model === "convergio-mini",
      "the edge applies the snapshot",
    );
    await chats(edge, user, ["split-before"]);
    await edge.runtime.batcher!.drain();
    assert.deepEqual(await ledgerCounts(cluster, ["split-before"]), { "split-before": 1 });

    await cluster.stop();

    // The edge keeps serving, on the config it last polled.
    const down = ["split-down-1", "split-down-2"];
    for (const id of down) {
      const s = await served(edge, user, { prompt: "still there?" }, id);
      assert.equal(s.model, "convergio-mini", "the cached lower_model still applies");
      assert.equal(s.downgradedFrom, "convergio-demo");
    }
    // Admin calls through the edge reach the read-only aggregator.
    assertReadOnly(await putTenant(edge, admin, "during"), "PUT /admin/tenants via the edge");
    const flags = await call(edge, "GET", "/admin/flags", { token: admin });
    assert.equal(flags.status, 200, flags.text);
    // A tool denial is enforced from the cached allow-list; its audit entry waits on the edge.
    const denied = await chat(edge, user, {
      prompt: "clean up",
      tools: [{ type: "function", function: { name: "delete_everything" } }],
    }, "split-denied");
    assert.equal(denied.status, 403, denied.text);
    assert.equal(denied.json.error.code, "tool.denied");
    edge.runtime.batcher!.flush();
    await waitUntil(
      async () => (await spooled(e)) === down.length + 1,
      "the edge spooled the batch",
    );
    // Polls keep working against the aggregator's last good snapshot.
    const syncs = await metric(edge, "convergio_control_syncs_total");
    await waitUntil(
      async () => (await metric(e, "convergio_control_syncs_total")) > syncs + 2,
      "more control polls",
    );
    assert.equal((await served(edge, user)).model, "convergio-mini");
    // (A delivery in flight takes the entry out of the queue and puts it back when refused.)
    await waitUntil(
      () => e.runtime.controlSync!.pendingAudit() === 1,
      "the denial's audit entry kept on the edge",
    );

    await cluster.start();

    await waitUntil(
      async () => (await putTenant(e, admin, "after")).status === 200,
      "admin writes accepted again",
    );
    await waitUntil(async () => (await spooled(e)) === 0, "the edge's spool drained");
    assert.deepEqual(
      await ledgerCounts(cluster, [...down, "split-denied"]),
      Object.fromEntries([...down, "split-denied"].map((id) => [id, 1])),
      "each spooled event landed once",
    );
    await waitUntil(() => e.runtime.controlSync!.pendingAudit() === 0, "the audit entry delivered");
    const deniedRows = await audit(edge, admin, { action: "tool.denied" });
    assert.equal(deniedRows.length, 1);
    assert.equal(deniedRows[0].request_id, "split-denied");
    assert.equal(deniedRows[0].target, "tenant:acme");
    // Changes flow again: lifting lower_model reaches the edge.
    const lift = await call(
      edge,
      "DELETE",
      `/admin/mitigations/lower_model?reason=${encodeURIComponent("outage over")}`,
      { token: admin },
    );
    assert.equal(lift.status, 200, lift.text);
    await waitUntil(
      async () => (await served(e, user)).model === "convergio-demo",
      "the edge sees the mitigation lifted",
    );
  } finally {
    await edge?.close();
    await aggregator?.close();
    await cluster.destroy();
    await Deno.remove(aggDir, { recursive: true });
    await Deno.remove(edgeDir, { recursive: true });
  }
});
