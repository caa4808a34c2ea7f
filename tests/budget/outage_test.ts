/**
 * A real Redis outage: the redis-server behind the REST bridge is stopped and
 * started again under a running gateway. Each lane applies its failure
 * policy at once, the failure is counted and logged, and the gateway
 * recovers by itself once Redis is back.
 */
import assert from "node:assert/strict";
import { startBridge } from "../../scripts/redis-rest-bridge.ts";
import { startGateway, testConfig, type TestGateway } from "../support/gateway.ts";

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** A throwaway redis-server with no persistence, ready to accept connections. */
async function startRedis(port: number) {
  const child = new Deno.Command("redis-server", {
    args: ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    stdout: "null",
    stderr: "null",
  }).spawn();
  for (let i = 0; i < 100; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return child;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  child.kill("SIGKILL");
  await child.status;
  throw new Error(`redis-server did not listen on ${port}`);
}

async function stopRedis(child: Deno.ChildProcess) {
  try {
    child.kill("SIGTERM");
  } catch { /* already exited */ }
  await child.status;
}

interface Harness {
  gw: TestGateway;
  redisPort: number;
  redis: Deno.ChildProcess | undefined;
  managed: string;
  byok: string;
}

/** Redis, bridge and in-process gateway for one test; everything is torn down after `body`. */
async function withOutageHarness(
  guardrails: { failure_policy?: Record<string, string>; local_admission?: object },
  body: (h: Harness) => Promise<void>,
) {
  const redisPort = freePort();
  const h = { redisPort, redis: await startRedis(redisPort) } as Harness;
  const token = crypto.randomUUID();
  const bridge = await startBridge({
    port: 0,
    token,
    redisUrl: `redis://127.0.0.1:${redisPort}`,
  }).catch(async (err) => {
    await stopRedis(h.redis!);
    throw err;
  });
  try {
    h.gw = await startGateway(testConfig({
      guardrails: {
        store: "redis",
        redis: {
          url: bridge.url,
          token,
          prefix: `test-outage-${crypto.randomUUID()}`,
          timeout_ms: 300,
        },
        ...guardrails,
      },
    }));
    try {
      h.managed = await h.gw.token({ tenant: "t1", user: "u1", mode: "managed" });
      h.byok = await h.gw.token({ tenant: "t1", user: "u1", mode: "byok" });
      await body(h);
    } finally {
      await h.gw.deps.edge!.guard.idle();
      await h.gw.close();
    }
  } finally {
    await bridge.close();
    if (h.redis) await stopRedis(h.redis);
  }
}

async function chat(gw: TestGateway, token: string) {
  const res = await fetch(`${gw.url}/v1/chat`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ prompt: "hi", max_tokens: 16 }),
    // A safety net against a hang, not a timing assertion.
    signal: AbortSignal.timeout(5000),
  });
  return {
    status: res.status,
    body: await res.json() as { error?: { code: string; retryable: boolean } },
  };
}

async function metricsText(gw: TestGateway) {
  return await (await fetch(`${gw.url}/metrics`)).text();
}

function storeErrors(metrics: string, lane: string, policy: string, op = "admit"): number {
  const line = metrics.split("\n").find((l) =>
    l.startsWith("convergio_budget_store_errors_total{") && l.includes(`op="${op}"`) &&
    l.includes(`lane="${lane}"`) && l.includes(`policy="${policy}"`)
  );
  return line ? Number(line.split(" ").at(-1)) : 0;
}

Deno.test("redis outage: managed fails closed with a fast 503, BYOK fails open, then the gateway recovers by itself", async () => {
  // Every request asks the store here; local admission has its own outage test below.
  await withOutageHarness({ local_admission: { enabled: false } }, async (h) => {
    assert.equal((await chat(h.gw, h.managed)).status, 200);
    assert.equal((await chat(h.gw, h.byok)).status, 200);
    await h.gw.deps.edge!.guard.idle();

    await stopRedis(h.redis!);
    h.redis = undefined;

    const managed = await chat(h.gw, h.managed);
    assert.equal(managed.status, 503, JSON.stringify(managed.body));
    assert.equal(managed.body.error?.code, "internal");
    assert.equal(managed.body.error?.retryable, true);
    const byok = await chat(h.gw, h.byok);
    assert.equal(byok.status, 200, JSON.stringify(byok.body));

    const metrics = await metricsText(h.gw);
    assert.equal(storeErrors(metrics, "managed", "closed"), 1, metrics);
    assert.equal(storeErrors(metrics, "byok", "open"), 1, metrics);
    const logged = h.gw.logs.filter((l) => l.msg === "budget store unavailable");
    assert.deepEqual(
      logged.map((l) => [l.level, l.lane, l.policy]),
      [["error", "managed", "closed"], ["error", "byok", "open"]],
    );

    h.redis = await startRedis(h.redisPort);
    let recovered: Awaited<ReturnType<typeof chat>> | undefined;
    let tries = 0;
    for (let i = 0; i < 50; i++) {
      tries++;
      const r = await chat(h.gw, h.managed);
      if (r.status === 200) {
        recovered = r;
        break;
      }
      assert.equal(r.status, 503, `only outage 503s while Redis comes back: ${JSON.stringify(r)}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.ok(recovered, "a managed request succeeds again once Redis is back");
    console.log(`managed lane recovered after ${tries} request(s) once Redis was restarted`);
    assert.equal((await chat(h.gw, h.byok)).status, 200);
  });
});

Deno.test("redis outage with failure_policy managed=open, byok=closed: the lanes swap behaviour", async () => {
  const failure_policy = { managed: "open", byok: "closed" };
  await withOutageHarness({ failure_policy, local_admission: { enabled: false } }, async (h) => {
    assert.equal((await chat(h.gw, h.managed)).status, 200);
    assert.equal((await chat(h.gw, h.byok)).status, 200);
    await h.gw.deps.edge!.guard.idle();

    await stopRedis(h.redis!);
    h.redis = undefined;

    const managed = await chat(h.gw, h.managed);
    assert.equal(managed.status, 200, JSON.stringify(managed.body));
    const byok = await chat(h.gw, h.byok);
    assert.equal(byok.status, 503, JSON.stringify(byok.body));
    assert.equal(byok.body.error?.code, "internal");
    assert.equal(byok.body.error?.retryable, true);

    const metrics = await metricsText(h.gw);
    assert.equal(storeErrors(metrics, "managed", "open"), 1, metrics);
    assert.equal(storeErrors(metrics, "byok", "closed"), 1, metrics);
    assert.equal(
      h.gw.logs.filter((l) => l.msg === "budget store unavailable").length,
      2,
    );
  });
});

Deno.test("redis outage under local admission: one request rides the last answer, its charge fails and is counted, the next meets the policy", async () => {
  // A long freshness window, so the outcome never depends on how fast this test runs.
  await withOutageHarness({ local_admission: { fresh_ms: 600_000 } }, async (h) => {
    assert.equal((await chat(h.gw, h.managed)).status, 200);
    await h.gw.deps.edge!.guard.idle();

    await stopRedis(h.redis!);
    h.redis = undefined;

    const rode = await chat(h.gw, h.managed);
    assert.equal(rode.status, 200, JSON.stringify(rode.body));
    await h.gw.deps.edge!.guard.idle();
    const charged = h.gw.logs.filter((l) => String(l.msg).startsWith("budget charge failed"));
    assert.equal(charged.length, 1);
    assert.equal(storeErrors(await metricsText(h.gw), "managed", "reconcile", "charge"), 1);

    const refused = await chat(h.gw, h.managed);
    assert.equal(refused.status, 503, JSON.stringify(refused.body));
    assert.equal(storeErrors(await metricsText(h.gw), "managed", "closed"), 1);
  });
});
