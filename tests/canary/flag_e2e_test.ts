/**
 * The policy canary end to end: a real gateway process (role all, Postgres)
 * whose `routing_policy` flag scripts/canary.ts rolls out through the flag
 * canary API while tenants send chats. `force:broken` sends the canary's
 * tenants to a provider that always fails, so the global 5xx share breaches
 * RB-1 and the canary is rolled back; `cheapest` is healthy and promoted.
 */
import assert from "node:assert/strict";
import { canaryBucket } from "../../src/control/flags.ts";
import {
  canaryCli,
  chat,
  FAST,
  gatewayConfig,
  startGateway,
  startLoad,
  token,
  waitFor,
} from "./_support.ts";

/** Tenants on both sides of a 50% canary of routing_policy (the buckets are a fixed hash). */
function tenantsAround50(): string[] {
  const ids = Array.from({ length: 60 }, (_, i) => `tenant-${i}`);
  const inside = ids.filter((t) => canaryBucket("routing_policy", t) < 50).slice(0, 3);
  const outside = ids.filter((t) => canaryBucket("routing_policy", t) >= 50).slice(0, 3);
  assert.equal(inside.length + outside.length, 6);
  return [...inside, ...outside];
}

Deno.test("policy canary on a real gateway: a failing flag value is rolled back, a healthy one promoted", async (t) => {
  const secret = crypto.randomUUID() + crypto.randomUUID();
  const gw = await startGateway(
    gatewayConfig({
      providers: {
        demo: { protocol: "mock" },
        broken: { protocol: "mock", fail: "unavailable" },
      },
      models: {
        "convergio-demo": {
          deployments: [
            { provider: "demo", model: "demo-large" },
            { provider: "broken", model: "demo-large" },
          ],
          price: { input_per_1m: 2, output_per_1m: 8 },
        },
      },
    }),
    secret,
  );
  try {
    const admin = await token(secret, "ops", true);
    const users = await Promise.all(tenantsAround50().map((t) => token(secret, t)));
    const env = { CONVERGIO_ADMIN_TOKEN: admin };
    const flag = async () => {
      const res = await fetch(`${gw.url}/admin/flags`, {
        headers: { authorization: `Bearer ${admin}` },
      });
      return (await res.json()).flags.routing_policy;
    };
    const flagArgs = (value: string, extra: string[] = []) => [
      "flag",
      "routing_policy",
      value,
      `--gateway=${gw.url}`,
      "--steps=50,100",
      "--reason=e2e policy canary",
      ...FAST,
      ...extra,
    ];

    await t.step(
      "force:broken fails the canary's tenants: RB-1 on the global signal, rolled back",
      async () => {
        const load = startLoad(gw.url, users, 2, 100);
        let res;
        try {
          res = await canaryCli(flagArgs("force:broken"), env);
        } finally {
          await load.stop();
        }
        assert.equal(res.code, 1, `${res.stdout}\n${res.stderr}`);
        assert.match(
          res.stdout,
          /^step 1\/2: canary at 50%: PUT \/admin\/flags\/routing_policy\/canary percent 50$/m,
        );
        assert.match(res.stdout, /^ROLLBACK: RB-1: 5xx ratio .* on the gateway \(all tenants\)$/m);
        assert.match(
          res.stdout,
          /^done: POST \/admin\/flags\/routing_policy\/canary\/rollback: canary dropped$/m,
        );
        const fivexx = [...load.statuses].filter(([s]) => s >= 500).reduce((n, [, c]) => n + c, 0);
        assert.ok(fivexx > 0, JSON.stringify([...load.statuses]));

        const state = await flag();
        assert.equal(state.canary, null);
        assert.equal(state.default, "priority");
        // The audit log tells the story, with the operator's reason.
        const audit = await fetch(`${gw.url}/admin/audit?target=flag:routing_policy`, {
          headers: { authorization: `Bearer ${admin}` },
        });
        const entries: Array<{ action: string; reason: string }> = (await audit.json()).entries;
        assert.deepEqual(entries.map((e) => e.action), ["flag.canary.rollback", "flag.canary.set"]);
        assert.equal(entries[1].reason, "e2e policy canary (step 50%)");
        assert.match(entries[0].reason, /^e2e policy canary: rolled back, RB-1: 5xx ratio/);

        // Every tenant is served again.
        await waitFor("every tenant to be served", async () => {
          for (const u of users) if ((await chat(gw.url, u)) !== 200) return false;
          return true;
        });
        const statuses = [];
        for (let i = 0; i < 30; i++) statuses.push(await chat(gw.url, users[i % users.length]));
        assert.deepEqual(statuses, Array(30).fill(200));
      },
    );

    await t.step("cheapest is healthy: every step passes and it becomes the default", async () => {
      const load = startLoad(gw.url, users, 2, 100);
      let res;
      try {
        res = await canaryCli(flagArgs("cheapest", ["--step-seconds=2"]), env);
      } finally {
        await load.stop();
      }
      assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
      assert.match(
        res.stdout,
        /^PROMOTED: POST \/admin\/flags\/routing_policy\/canary\/promote: "cheapest" is the default$/m,
      );
      assert.deepEqual([...load.statuses.keys()], [200], JSON.stringify([...load.statuses]));
      const state = await flag();
      assert.equal(state.default, "cheapest");
      assert.equal(state.canary, null);
    });

    await t.step(
      "a second canary of another value is refused while one is in progress",
      async () => {
        const put = await fetch(`${gw.url}/admin/flags/routing_policy/canary`, {
          method: "PUT",
          headers: { authorization: `Bearer ${admin}`, "content-type": "application/json" },
          body: JSON.stringify({ percent: 10, value: "priority", reason: "someone else's canary" }),
        });
        assert.equal(put.status, 200);
        await put.body?.cancel();
        const res = await canaryCli(flagArgs("force:broken"), env);
        assert.equal(res.code, 2, `${res.stdout}\n${res.stderr}`);
        assert.match(
          res.stdout,
          /already has a canary of "priority"; promote or roll it back first/,
        );
        assert.deepEqual((await flag()).canary, { percent: 10, value: "priority" }, "left alone");
      },
    );
  } finally {
    await gw.stop();
  }
});
