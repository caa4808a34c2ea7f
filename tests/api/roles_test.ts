import { call } from "../support/admin_client.ts";
import assert from "node:assert/strict";
import { freshPostgres } from "../support/db.ts";
import { startGateway, testConfig, type TestGateway } from "../support/gateway.ts";

const SECRET = "roles-test-metering-secret";

interface Pair {
  aggregator: TestGateway;
  edge: TestGateway;
  /** Stops the aggregator early; the cleanup then leaves it alone. */
  stopAggregator(): Promise<void>;
}

/**
 * An aggregator on a fresh Postgres and an edge pointed at it over real HTTP,
 * both with the same metering secret. The edge runs its real batcher: the
 * `meter: undefined` override cancels the collector startGateway puts on edges.
 */
async function withPair(fn: (pair: Pair) => Promise<void>) {
  const aggDir = await Deno.makeTempDir({ prefix: "cvg-roles-agg-" });
  const edgeDir = await Deno.makeTempDir({ prefix: "cvg-roles-edge-" });
  const pg = await freshPostgres();
  let aggregator: TestGateway | undefined;
  let edge: TestGateway | undefined;
  let aggregatorOpen = false;
  try {
    aggregator = await startGateway(testConfig({
      role: "aggregator",
      data_dir: aggDir,
      database_url: pg.url,
      metering: { secret: SECRET },
    }));
    aggregatorOpen = true;
    edge = await startGateway(
      testConfig({
        role: "edge",
        data_dir: edgeDir,
        metering: { aggregator_url: aggregator.url, secret: SECRET, shutdown_flush_ms: 1_000 },
        guardrails: { store: "memory" },
      }),
      { meter: undefined },
    );
    const agg = aggregator;
    await fn({
      aggregator: agg,
      edge,
      async stopAggregator() {
        aggregatorOpen = false;
        await agg.close();
      },
    });
  } finally {
    await edge?.close();
    if (aggregatorOpen) await aggregator?.close();
    await pg.drop();
    await Deno.remove(aggDir, { recursive: true });
    await Deno.remove(edgeDir, { recursive: true });
  }
}

Deno.test("roles: the edge meters to a remote aggregator and forwards login and usage to it", async () => {
  await withPair(async ({ aggregator, edge }) => {
    assert.equal(edge.runtime.db, undefined, "the edge has no database");
    assert.ok(edge.runtime.batcher, "the edge runs the real batcher");
    assert.equal(edge.events.length, 0);
    assert.equal(aggregator.runtime.batcher, undefined);
    assert.equal((await call(edge, "GET", "/healthz")).json.role, "edge");
    assert.equal((await call(aggregator, "GET", "/healthz")).json.role, "aggregator");

    // A key made on the aggregator; login through the edge is forwarded to it.
    const admin = await aggregator.token({ tenant: "ops", user: "root", roles: ["admin"] });
    const key = await call(aggregator, "POST", "/admin/api-keys", {
      token: admin,
      body: { tenant_id: "acme", user_id: "alice", mode: "managed" },
    });
    assert.equal(key.status, 201, key.text);
    const login = await call(edge, "POST", "/v1/auth/login", {
      body: { api_key: key.json.api_key },
      requestId: "req-login-1",
    });
    assert.equal(login.status, 200, login.text);
    assert.equal(login.json.request_id, "req-login-1", "the request id travels to the aggregator");
    const token = login.json.access_token;
    const badLogin = await call(edge, "POST", "/v1/auth/login", {
      body: { api_key: "cvg_nope" },
    });
    assert.equal(badLogin.status, 401);
    assert.equal(badLogin.json.error.code, "auth.invalid");
    const badBody = await call(edge, "POST", "/v1/auth/login", { body: { key: 1 } });
    assert.equal(badBody.status, 400);

    // Chats on the edge end up in the aggregator's ledger.
    const ids = ["req-edge-1", "req-edge-2", "req-edge-3"];
    for (const id of ids.slice(0, 2)) {
      const res = await call(edge, "POST", "/v1/chat", {
        token,
        body: { prompt: `hello ${id}` },
        requestId: id,
      });
      assert.equal(res.status, 200, res.text);
    }
    const refused = await call(edge, "POST", "/v1/chat/completions", {
      token,
      body: { model: "no-such-model", messages: [{ role: "user", content: "x" }] },
      requestId: ids[2],
    });
    assert.equal(refused.status, 400);
    await edge.runtime.batcher!.drain();
    const sql = aggregator.runtime.db!.sql;
    const rows = await sql<{ request_id: string; tenant_id: string; user_id: string }[]>`
      SELECT request_id, tenant_id, user_id, success FROM usage_events ORDER BY request_id`;
    assert.deepEqual(rows.map((r) => r.request_id), ids);
    assert.ok(rows.every((r) => r.tenant_id === "acme" && r.user_id === "alice"));

    // Usage read through the edge is the aggregator's answer.
    const current = await call(edge, "GET", "/v1/usage/current", { token });
    assert.equal(current.status, 200, current.text);
    assert.equal(current.json.tenant_id, "acme");
    assert.equal(current.json.day.requests, 3);
    assert.equal(current.json.day.errors, 1);
    assert.ok(current.json.day.managed_cost_usd > 0);
    const direct = await call(aggregator, "GET", "/v1/usage/current", { token });
    const { request_id: _a, ...viaEdge } = current.json;
    const { request_id: _b, ...viaAggregator } = direct.json;
    assert.deepEqual(viaEdge, viaAggregator);
    const events = await call(edge, "GET", "/v1/usage/events?tenant_id=acme", { token: admin });
    assert.equal(events.status, 200);
    assert.equal(events.json.data.length, 3);
    const unauthenticated = await call(edge, "GET", "/v1/usage/current");
    assert.equal(unauthenticated.status, 401);

    // The aggregator serves no chat; the edge no internal routes nor ledger admin.
    for (
      const [method, path] of [
        ["POST", "/v1/chat"],
        ["POST", "/v1/chat/stream"],
        ["POST", "/v1/chat/completions"],
        ["GET", "/v1/models"],
        ["GET", "/v1/me"],
      ]
    ) {
      const res = await call(aggregator, method, path, {
        token,
        body: method === "POST" ? { prompt: "hi" } : undefined,
      });
      assert.equal(res.status, 404, `aggregator ${method} ${path}`);
    }
    for (
      const [method, path] of [
        ["POST", "/internal/metering/batches"],
        ["GET", "/internal/metering/rollups?day=2026-01-01"],
      ]
    ) {
      const res = await call(edge, method, path, {
        token: admin,
        body: method === "POST" ? { batch_id: "b", events: [] } : undefined,
      });
      assert.equal(res.status, 404, `edge ${method} ${path}`);
    }
    // The admin API lives on the aggregator; an edge forwards it, answers and all.
    for (
      const [method, path, status] of [
        ["POST", "/admin/api-keys", 400],
        ["GET", "/admin/audit?limit=1", 200],
        ["GET", "/admin/flags", 200],
      ] as const
    ) {
      const res = await call(edge, method, path, {
        token: admin,
        body: method === "POST" ? { batch_id: "b", events: [] } : undefined,
      });
      assert.equal(res.status, status, `edge ${method} ${path}: ${res.text}`);
    }
  });
});

Deno.test("roles: with the aggregator stopped, the edge's forwarded routes answer 503 retryable", async () => {
  await withPair(async ({ aggregator, edge, stopAggregator }) => {
    const token = await edge.token({ tenant: "acme", user: "alice", mode: "managed" });
    const before = await call(edge, "GET", "/v1/usage/current", { token });
    assert.equal(before.status, 200, before.text);
    await stopAggregator();
    assert.equal(
      await fetch(`${aggregator.url}/healthz`).then((r) => r.body?.cancel(), () => "down"),
      "down",
    );

    const current = await call(edge, "GET", "/v1/usage/current", { token });
    assert.equal(current.status, 503, current.text);
    assert.equal(current.json.error.code, "internal");
    assert.equal(current.json.error.retryable, true);
    const login = await call(edge, "POST", "/v1/auth/login", { body: { api_key: "cvg_x" } });
    assert.equal(login.status, 503);
    assert.equal(login.json.error.retryable, true);

    // Chat still works on the edge; its events wait in the spool.
    const chat = await call(edge, "POST", "/v1/chat", { token, body: { prompt: "still here" } });
    assert.equal(chat.status, 200, chat.text);
  });
});

// README: "Every response carries `x-request-id`". Forwarded answers lose it:
// the proxy drops the aggregator's header and returns a raw Response, which
// Hono does not merge with the header requestContext prepared.
Deno.test("roles: responses forwarded by the edge carry the request's x-request-id", async () => {
  await withPair(async ({ edge }) => {
    const token = await edge.token({ tenant: "acme", user: "alice" });
    const current = await call(edge, "GET", "/v1/usage/current", {
      token,
      requestId: "req-fwd-1",
    });
    assert.equal(current.status, 200, current.text);
    assert.equal(current.json.request_id, "req-fwd-1");
    assert.equal(current.headers.get("x-request-id"), "req-fwd-1");
    const login = await call(edge, "POST", "/v1/auth/login", {
      body: { api_key: "cvg_unknown" },
      requestId: "req-fwd-2",
    });
    assert.equal(login.status, 401);
    assert.equal(login.headers.get("x-request-id"), "req-fwd-2");
  });
});
