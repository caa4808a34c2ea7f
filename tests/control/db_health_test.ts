import assert from "node:assert/strict";
import { DbHealth, isConnectionError } from "../../src/control/db_health.ts";
import type { Sql } from "../../src/db/client.ts";
import { GatewayError } from "../../src/errors.ts";
import { counted, messages, observed } from "./_helpers.ts";

/** postgres.js socket and connection codes, then Postgres's admin-shutdown and 08 classes. */
const CONNECTION_CODES = [
  ...["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "CONNECT_TIMEOUT"],
  ...["CONNECTION_CLOSED", "CONNECTION_ENDED", "CONNECTION_DESTROYED"],
  ...["57P01", "57P03", "08006", "08001"],
];

const lost = () => ({ code: "ECONNREFUSED", message: "connect ECONNREFUSED 127.0.0.1:5432" });

/**
 * A DbHealth over a fake database whose probe (`SELECT 1`) fails `probeFailures`
 * times, then answers. `changes` records every onChange; `recovered` resolves
 * at the first onChange(false).
 */
function setup(probeFailures = 0) {
  const obs = observed();
  const probes: string[] = [];
  const sql = ((strings: TemplateStringsArray) => {
    probes.push(strings.join("?"));
    return probes.length <= probeFailures ? Promise.reject(lost()) : Promise.resolve([{ n: 1 }]);
  }) as unknown as Sql;
  const changes: boolean[] = [];
  const { promise: recovered, resolve } = Promise.withResolvers<void>();
  const health = new DbHealth({
    sql,
    log: obs.log,
    metrics: obs.metrics,
    probeMs: 1,
    onChange(down) {
      changes.push(down);
      if (!down) resolve();
    },
  });
  return { ...obs, health, probes, changes, recovered };
}

/** Runs `fn` with a fresh DbHealth, and stops its probe afterwards. */
async function withHealth(
  fn: (h: ReturnType<typeof setup>) => void | Promise<void>,
  probeFailures = 0,
): Promise<void> {
  const h = setup(probeFailures);
  try {
    await fn(h);
  } finally {
    h.health.close();
  }
}

function isReadOnly(err: unknown): boolean {
  assert.ok(err instanceof GatewayError, `expected GatewayError, got ${err}`);
  assert.equal(err.code, "db.read_only");
  assert.equal(err.status, 503);
  assert.equal(err.retryable, true);
  assert.equal(err.headers["retry-after"], "5");
  return true;
}

Deno.test("isConnectionError: lost-connection codes yes, query errors no", () => {
  for (const code of CONNECTION_CODES) assert.equal(isConnectionError({ code }), true, code);
  for (const err of [{ code: "23505" }, { code: "42P01" }, { code: 8006 }, {}, null, "08006"]) {
    assert.equal(isConnectionError(err), false, JSON.stringify(err));
  }
  assert.equal(isConnectionError(new Error("ECONNREFUSED")), false);
});

Deno.test("run returns the operation's result while the database is up", async () => {
  await withHealth(async ({ health, changes }) => {
    assert.equal(await health.run("op", () => Promise.resolve(42)), 42);
    assert.equal(health.down, false);
    assert.deepEqual(changes, []);
  });
});

Deno.test("a connection error marks the database down and answers db.read_only", async () => {
  await withHealth(async ({ health, changes, metrics, lines }) => {
    await assert.rejects(health.run("control_write", () => Promise.reject(lost())), isReadOnly);
    assert.equal(health.down, true);
    assert.deepEqual(changes, [true]);
    assert.equal(await counted(metrics.dbErrors, { op: "control_write" }), 1);
    assert.deepEqual(messages(lines, "error"), ["database unreachable: read-only mode"]);
  }, Infinity);
});

Deno.test("while down, run refuses at once without calling the operation", async () => {
  await withHealth(async ({ health, changes, metrics }) => {
    await assert.rejects(health.run("a", () => Promise.reject(lost())), isReadOnly);
    let called = 0;
    const op = () => (called++, Promise.resolve("x"));
    await assert.rejects(health.run("b", op), isReadOnly);
    await assert.rejects(health.run("b", op), isReadOnly);
    assert.equal(called, 0);
    assert.deepEqual(changes, [true]);
    assert.equal(await counted(metrics.dbErrors, { op: "b" }), 0);
  }, Infinity);
});

Deno.test("the probe ends read-only mode once the database answers again", async () => {
  await withHealth(async ({ health, changes, recovered, probes, lines }) => {
    await assert.rejects(health.run("a", () => Promise.reject(lost())), isReadOnly);
    await recovered;
    assert.equal(health.down, false);
    assert.deepEqual(changes, [true, false]);
    assert.ok(probes.length >= 3, `${probes.length} probes`);
    assert.equal(probes[0], "SELECT 1");
    assert.deepEqual(messages(lines, "warn"), ["database reachable again: read-only mode over"]);
    assert.equal(await health.run("b", () => Promise.resolve("back")), "back");
  }, 2);
});

Deno.test("a database that goes down again is marked down again", async () => {
  await withHealth(async ({ health, changes, recovered }) => {
    await assert.rejects(health.run("a", () => Promise.reject(lost())), isReadOnly);
    await recovered;
    await assert.rejects(health.run("a", () => Promise.reject({ code: "57P01" })), isReadOnly);
    assert.equal(health.down, true);
    assert.deepEqual(changes, [true, false, true]);
  });
});

Deno.test("other errors pass through untouched and leave the database up", async () => {
  await withHealth(async ({ health, changes, metrics }) => {
    const unique = Object.assign(new Error("duplicate key"), { code: "23505" });
    await assert.rejects(health.run("a", () => Promise.reject(unique)), (err) => err === unique);
    assert.equal(health.down, false);
    assert.deepEqual(changes, []);
    assert.equal(await counted(metrics.dbErrors, {}), 0);
  });
});

Deno.test("markDown twice reports the change once", async () => {
  await withHealth(({ health, changes, lines }) => {
    health.markDown(lost());
    health.markDown(lost());
    assert.equal(health.down, true);
    assert.deepEqual(changes, [true]);
    assert.equal(messages(lines, "error").length, 1);
  }, Infinity);
});
