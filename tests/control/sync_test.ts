import assert from "node:assert/strict";
import { MemoryBudgetStore } from "../../src/budget/memory_store.ts";
import type { AuditEntry } from "../../src/control/audit.ts";
import { createControlSync } from "../../src/control/sync.ts";
import { ControlView } from "../../src/control/view.ts";
import { verifyBody } from "../../src/metering/signature.ts";
import { snapshot } from "../support/control.ts";
import { testConfig } from "../support/gateway.ts";
import { counted, manualClock, messages, observed, tenantSettings } from "./_helpers.ts";

const SECRET = "sync-test-secret";
const SNAPSHOT_PATH = "/internal/control/snapshot";
const AUDIT_PATH = "/internal/control/audit";

interface Seen {
  path: string;
  method: string;
  ifNoneMatch: string | null;
  body: string;
  signature?: string;
  signed: boolean;
}

/**
 * The aggregator's two control endpoints, in memory: the snapshot with its
 * version as ETag, and the audit intake. `fail` makes one endpoint answer 500
 * or drop the connection.
 */
function fakeAggregator(clock: { now(): number }) {
  const agg = {
    snapshot: snapshot({ version: "v1" }),
    seen: [] as Seen[],
    delivered: [] as AuditEntry[],
    fail: {} as Partial<Record<"snapshot" | "audit", "500" | "network" | "garbage">>,
    /** Runs while an audit delivery is in flight. */
    duringAudit: () => {},
    async fetch(req: Request): Promise<Response> {
      const path = new URL(req.url).pathname;
      const body = await req.text();
      const header = req.headers.get("x-convergio-signature") ?? undefined;
      agg.seen.push({
        path,
        method: req.method,
        ifNoneMatch: req.headers.get("if-none-match"),
        body,
        signature: header,
        signed: await verifyBody(SECRET, body || path, header, clock.now()),
      });
      if (path === AUDIT_PATH) agg.duringAudit();
      const failure = agg.fail[path === AUDIT_PATH ? "audit" : "snapshot"];
      if (failure === "network") throw new TypeError("connection refused");
      // A 500 with a well-formed body still counts as a failure.
      if (failure === "500") return Response.json(agg.snapshot, { status: 500 });
      if (failure === "garbage") return Response.json({ version: 1 });
      if (path === AUDIT_PATH) {
        agg.delivered.push(...JSON.parse(body).entries);
        return Response.json({ ok: true });
      }
      const etag = `"${agg.snapshot.version}"`;
      if (req.headers.get("if-none-match") === etag) return new Response(null, { status: 304 });
      return Response.json(agg.snapshot, { headers: { etag } });
    },
  };
  return agg;
}

function setup(maxPendingAudit?: number) {
  const clock = manualClock();
  const obs = observed(clock.now);
  const agg = fakeAggregator(clock);
  const view = new ControlView(testConfig());
  const applied: string[] = [];
  const apply = view.apply.bind(view);
  view.apply = (...args: Parameters<ControlView["apply"]>) => {
    applied.push(args[0].version);
    apply(...args);
  };
  const store = new MemoryBudgetStore(clock);
  const sync = createControlSync({
    aggregatorUrl: "http://aggregator.test/",
    secret: SECRET,
    view,
    store,
    clock,
    ...obs,
    fetch: agg.fetch,
    maxPendingAudit,
  });
  return { ...obs, clock, agg, view, applied, store, sync };
}

const syncs = (s: ReturnType<typeof setup>, outcome: string) =>
  counted(s.metrics.controlSyncs, { outcome });

const denial = (n: number): AuditEntry => ({
  actor: "edge",
  actor_tenant: "t1",
  action: "tool.denied",
  target: "tenant:t1",
  before: null,
  after: { tool: `tool-${n}` },
  request_id: `req-${n}`,
  reason: null,
});

const tools = (entries: AuditEntry[]) => entries.map((e) => (e.after as { tool: string }).tool);

Deno.test("the first poll applies the snapshot; the next costs a 304 and applies nothing", async () => {
  const s = setup();
  assert.equal(await s.sync.refresh(), true);
  assert.equal(s.view.version, "v1");
  assert.deepEqual(s.applied, ["v1"]);
  assert.equal(await syncs(s, "updated"), 1);

  assert.equal(await s.sync.refresh(), false);
  assert.deepEqual(s.applied, ["v1"]);
  assert.equal(await syncs(s, "not_modified"), 1);
  assert.deepEqual(s.agg.seen.map((r) => [r.method, r.path, r.ifNoneMatch]), [
    ["GET", SNAPSHOT_PATH, '"empty"'],
    ["GET", SNAPSHOT_PATH, '"v1"'],
  ]);
});

Deno.test("snapshot polls are signed with the shared secret over the path", async () => {
  const s = setup();
  await s.sync.refresh();
  const [poll] = s.agg.seen;
  assert.equal(poll.signed, true);
  assert.equal(
    await verifyBody("another-secret", SNAPSHOT_PATH, poll.signature, s.clock.now()),
    false,
  );
  assert.equal(await verifyBody(SECRET, "/other", poll.signature, s.clock.now()), false);
});

Deno.test("a changed snapshot is applied on the next poll", async () => {
  const s = setup();
  await s.sync.refresh();
  s.agg.snapshot = snapshot({ version: "v2", tenants: { newco: tenantSettings() } });
  assert.equal(await s.sync.refresh(), true);
  assert.equal(s.view.version, "v2");
  assert.equal(s.view.isKnownTenant("newco"), true);
  assert.deepEqual(s.applied, ["v1", "v2"]);
});

for (const failure of ["network", "500", "garbage"] as const) {
  Deno.test(`a failed poll (${failure}) keeps the last good snapshot and counts an error`, async () => {
    const s = setup();
    await s.sync.refresh();
    s.agg.snapshot = snapshot({ version: "v2" });
    s.agg.fail.snapshot = failure;
    assert.equal(await s.sync.refresh(), false);
    assert.equal(s.view.version, "v1");
    assert.deepEqual(s.applied, ["v1"]);
    assert.equal(await syncs(s, "error"), 1);
    assert.deepEqual(messages(s.lines, "warn"), [
      "control sync failed; keeping the last good snapshot",
    ]);

    delete s.agg.fail.snapshot;
    assert.equal(await s.sync.refresh(), true);
    assert.equal(s.view.version, "v2");
  });
}

Deno.test("budget overrides are mirrored into the budget store, and cleared when gone", async () => {
  const s = setup();
  const override = {
    tenant_id: "acme",
    reason: "launch week",
    by: "ops@example.com",
    expires_at: s.clock.now() + 3_600_000,
  };
  s.agg.snapshot = snapshot({ version: "v1", budget_overrides: [override] });
  await s.sync.refresh();
  assert.deepEqual(await s.store.getOverride("acme"), override);

  const extended = { ...override, expires_at: override.expires_at + 3_600_000 };
  s.agg.snapshot = snapshot({ version: "v2", budget_overrides: [extended] });
  await s.sync.refresh();
  assert.deepEqual(await s.store.getOverride("acme"), extended);

  s.agg.snapshot = snapshot({ version: "v3" });
  await s.sync.refresh();
  assert.equal(await s.store.getOverride("acme"), null);
});

Deno.test("an override set on the store directly survives polls that never had it", async () => {
  const s = setup();
  const local = { tenant_id: "local", reason: "r", by: "b", expires_at: s.clock.now() + 60_000 };
  await s.store.setOverride(local);
  await s.sync.refresh();
  s.agg.snapshot = snapshot({ version: "v2" });
  await s.sync.refresh();
  assert.deepEqual(await s.store.getOverride("local"), local);
});

Deno.test("queued audit entries go, signed, with the next poll", async () => {
  const s = setup();
  s.sync.audit(denial(1));
  s.sync.audit(denial(2));
  assert.equal(s.sync.pendingAudit(), 2);
  assert.deepEqual(s.agg.delivered, []);

  await s.sync.refresh();
  assert.deepEqual(s.agg.delivered, [denial(1), denial(2)]);
  assert.equal(s.sync.pendingAudit(), 0);
  const post = s.agg.seen.find((r) => r.path === AUDIT_PATH)!;
  assert.equal(post.method, "POST");
  assert.equal(post.signed, true);

  await s.sync.refresh();
  assert.equal(s.agg.seen.filter((r) => r.path === AUDIT_PATH).length, 1, "nothing to send");
});

Deno.test("audit entries go even when the snapshot poll fails", async () => {
  const s = setup();
  s.agg.fail.snapshot = "500";
  s.sync.audit(denial(1));
  await s.sync.refresh();
  assert.deepEqual(s.agg.delivered, [denial(1)]);
});

for (const failure of ["network", "500"] as const) {
  Deno.test(`audit entries whose delivery fails (${failure}) wait, in order, for the next`, async () => {
    const s = setup();
    s.sync.audit(denial(1));
    s.sync.audit(denial(2));
    s.agg.fail.audit = failure;
    s.agg.duringAudit = () => s.sync.audit(denial(3));
    await s.sync.refresh();
    assert.equal(s.sync.pendingAudit(), 3);
    assert.deepEqual(messages(s.lines, "warn"), ["audit delivery deferred"]);

    delete s.agg.fail.audit;
    s.agg.duringAudit = () => {};
    s.sync.audit(denial(4));
    await s.sync.refresh();
    assert.deepEqual(tools(s.agg.delivered), ["tool-1", "tool-2", "tool-3", "tool-4"]);
    assert.equal(s.sync.pendingAudit(), 0);
  });
}

Deno.test("past maxPendingAudit the oldest entries are dropped, and that is logged", async () => {
  const s = setup(3);
  for (let n = 1; n <= 5; n++) s.sync.audit(denial(n));
  assert.equal(s.sync.pendingAudit(), 3);
  assert.deepEqual(messages(s.lines, "error"), [
    "audit entries dropped: aggregator unreachable too long",
    "audit entries dropped: aggregator unreachable too long",
  ]);
  await s.sync.refresh();
  assert.deepEqual(tools(s.agg.delivered), ["tool-3", "tool-4", "tool-5"]);
});

Deno.test("a long queue goes 500 entries per poll", async () => {
  const s = setup();
  for (let n = 0; n < 501; n++) s.sync.audit(denial(n));
  await s.sync.refresh();
  assert.equal(s.agg.delivered.length, 500);
  assert.equal(s.sync.pendingAudit(), 1);
  await s.sync.refresh();
  assert.deepEqual(tools(s.agg.delivered.slice(-1)), ["tool-500"]);
});
