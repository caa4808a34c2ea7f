import assert from "node:assert/strict";
import { periodsAt } from "../../src/budget/store.ts";
import { canaryBucket } from "../../src/control/flags.ts";
import { withFullGateway } from "../support/gateway.ts";
import type { TestGateway } from "../support/gateway.ts";
import {
  admin,
  as,
  assertError,
  audit,
  chat,
  type Client,
  type Json,
  ok,
  REASON,
  tool,
  withReason,
} from "../support/admin_client.ts";
import { connect, VOICE_ALIAS, VOICE_PRICE, voiceStart } from "../voice/_voice_support.ts";

/**
 * Two chat providers behind one alias (alpha first, beta cheaper), a voice
 * alias on a realtime mock, and budgets small enough to reach in a test.
 */
const CONFIG = {
  providers: {
    alpha: { protocol: "mock" },
    beta: { protocol: "mock" },
    "rt-a": { protocol: "realtime_mock" },
  },
  models: {
    "convergio-demo": {
      deployments: [
        { provider: "alpha", model: "alpha-large", cost: { input_per_1m: 10, output_per_1m: 10 } },
        { provider: "beta", model: "beta-large", cost: { input_per_1m: 1, output_per_1m: 1 } },
      ],
      price: { input_per_1m: 1000, output_per_1m: 1000 },
    },
    [VOICE_ALIAS]: {
      deployments: [{ provider: "rt-a", model: "rt-a-model" }],
      price: VOICE_PRICE,
    },
  },
  voice: { model: VOICE_ALIAS },
  tenant_defaults: { rpm: 1000, daily_budget_usd: 100, monthly_budget_usd: 1000 },
};

const withGateway = (fn: (gw: TestGateway, root: Client) => Promise<void>) =>
  withFullGateway(CONFIG, async (gw) => fn(gw, await admin(gw)));

/** The provider that served one chat of `tenant`, from the header and the V7 body. */
async function servedBy(gw: TestGateway, tenant: string): Promise<string> {
  const res = await chat(await as(gw, { tenant }));
  const body = ok(res);
  assert.equal(res.headers.get("x-convergio-provider"), body.provider);
  return body.provider;
}

/** The provider serving each tenant, in order. */
async function servedEach(gw: TestGateway, tenants: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const t of tenants) out.push(await servedBy(gw, t));
  return out;
}

/** A flag's value for a tenant, and where it came from, as the admin API explains it. */
async function explain(root: Client, flag: string, tenant: string): Promise<Json> {
  return ok(await root.get(`/admin/flags?tenant=${tenant}`)).flags[flag].for_tenant;
}

Deno.test("routing_policy: priority serves the first deployment; force, cheapest and a tenant override move traffic", async () => {
  await withGateway(async (gw, root) => {
    assert.equal(await servedBy(gw, "acme"), "alpha", "priority: the alias's first deployment");

    ok(await root.put("/admin/flags/routing_policy", { default: "force:beta", reason: REASON }));
    assert.equal(await servedBy(gw, "acme"), "beta");
    ok(await root.put("/admin/flags/routing_policy", { default: "force:alpha", reason: REASON }));
    assert.equal(await servedBy(gw, "acme"), "alpha");

    ok(await root.put("/admin/flags/routing_policy", { default: "cheapest", reason: REASON }));
    assert.equal(await servedBy(gw, "acme"), "beta", "cheapest: beta's deployment cost is lower");

    ok(await root.put("/admin/flags/routing_policy", { default: "priority", reason: REASON }));
    const put = await root.put("/admin/flags/routing_policy/overrides/globex", {
      value: "force:beta",
      reason: REASON,
    });
    assert.deepEqual(ok(put).state.overrides, { globex: "force:beta" });
    assert.deepEqual(await servedEach(gw, ["acme", "globex", "initech"]), [
      "alpha",
      "beta",
      "alpha",
    ]);
    assert.deepEqual(await explain(root, "routing_policy", "globex"), {
      value: "force:beta",
      source: "override",
    });
    assert.deepEqual(await explain(root, "routing_policy", "acme"), {
      value: "priority",
      source: "default",
    });

    ok(await root.del(withReason("/admin/flags/routing_policy/overrides/globex")));
    assert.equal(await servedBy(gw, "globex"), "alpha", "the override is gone");
  });
});

Deno.test("metering_mode shadow: an over-budget managed tenant is served, and its spend still counts", async () => {
  await withGateway(async (gw, root) => {
    const day = periodsAt(Date.now()).day;
    for (const id of ["acme", "globex"]) {
      // 110 USD of a 100 USD daily budget.
      await gw.deps.edge!.store.setSpend(
        { scope: "tenant", id, period: "day", bucket: day },
        110_000_000,
      );
    }
    const acme = await as(gw, { tenant: "acme", mode: "managed" });
    const globex = await as(gw, { tenant: "globex", mode: "managed" });
    assertError(await chat(acme), 402, "budget.blocked");

    ok(
      await root.put("/admin/flags/metering_mode/overrides/acme", {
        value: "shadow",
        reason: REASON,
      }),
    );
    const served = ok(await chat(acme));
    assert.ok(served.usage.cost_usd > 0);
    assertError(await chat(globex), 402, "budget.blocked");

    // Counted on the fast path (the budget counters behind /v1/me)...
    await gw.deps.edge!.guard.idle();
    const me = ok(await acme.get("/v1/me"));
    assert.ok(Math.abs(me.budget.day.spent_usd - (110 + served.usage.cost_usd)) < 1e-9);
    assert.ok(me.budget.day.fraction > 1.1);
    // ...and in the ledger.
    await gw.runtime.batcher!.drain();
    const current = ok(await acme.get("/v1/usage/current"));
    assert.equal(current.day.requests, 2, "the blocked request and the served one");
    assert.ok(Math.abs(current.day.managed_cost_usd - served.usage.cost_usd) < 1e-6);

    ok(await root.del(withReason("/admin/flags/metering_mode/overrides/acme")));
    assertError(await chat(acme), 402, "budget.blocked");
  });
});

Deno.test("voice_mode: off refuses voice.start with feature.disabled; text-only degrades it", async () => {
  await withGateway(async (gw, root) => {
    const { c } = await connect(gw, await gw.token({ tenant: "acme" }));
    try {
      c.send(voiceStart("v1"));
      assert.equal((await c.nextOf("voice.ready", "v1")).provider, "rt-a", "on by default");
      c.send({ type: "voice.stop", request_id: "v1" });
      await c.nextOf("voice.complete", "v1");

      ok(
        await root.put("/admin/flags/voice_mode/overrides/acme", { value: "off", reason: REASON }),
      );
      c.send(voiceStart("v2"));
      const refused = await c.nextOf("error", "v2");
      assert.equal(refused.code, "feature.disabled");

      ok(
        await root.put("/admin/flags/voice_mode/overrides/acme", {
          value: "text-only",
          reason: REASON,
        }),
      );
      c.send(voiceStart("v3"));
      const degraded = await c.nextOf("voice.degraded", "v3");
      assert.equal(degraded.mode, "text-only");
      assert.ok(
        !c.frames.some((f) => f.type === "voice.ready" && f.request_id !== "v1"),
        "no voice session was opened while voice was off or text-only",
      );
    } finally {
      await c.close();
    }

    // Another tenant's socket is untouched by acme's override.
    const other = await connect(gw, await gw.token({ tenant: "globex" }));
    try {
      other.c.send(voiceStart("g1"));
      await other.c.nextOf("voice.ready", "g1");
    } finally {
      await other.c.close();
    }
  });
});

Deno.test("plugin_permissions: a plugin tool needing net.http is tool.denied until the tenant is granted it", async () => {
  await withGateway(async (gw, root) => {
    const installed = await root.post("/v1/plugins/install", {
      manifest: {
        name: "web-fetch",
        version: "1.0.0",
        tools: ["fetch_url"],
        permissions: ["net.http"],
      },
      reason: REASON,
    });
    assert.equal(ok(installed, 201).plugin.status, "approved", "net.http is not high-risk");
    const acme = await as(gw, { tenant: "acme" });
    const ask = () => chat(acme, { tools: [tool("fetch_url")] });

    const denied = await ask();
    assertError(denied, 403, "tool.denied", "tools");
    assert.match(denied.json.error.message, /net\.http/);

    ok(
      await root.put("/admin/flags/plugin_permissions/overrides/acme", {
        value: ["net.http"],
        reason: REASON,
      }),
    );
    const allowed = ok(await ask());
    assert.equal(allowed.finish_reason, "tool_calls");
    assert.equal(allowed.message.tool_calls[0].function.name, "fetch_url");
    assert.equal(allowed.usage.tool_calls, 1);

    // Only acme was granted it.
    assertError(
      await chat(await as(gw, { tenant: "globex" }), { tools: [tool("fetch_url")] }),
      403,
      "tool.denied",
    );
    // A kill switch takes every grant away.
    ok(await root.post("/admin/flags/plugin_permissions/kill", { reason: REASON }));
    assertError(await ask(), 403, "tool.denied");
  });
});

const TENANTS = Array.from({ length: 20 }, (_, i) => `tenant-${String(i).padStart(2, "0")}`);
const bucket = (t: string) => canaryBucket("routing_policy", t);

Deno.test("canary: tenants split by canaryBucket; widening is sticky; promote, rollback, kill, unkill", async () => {
  await withGateway(async (gw, root) => {
    const canary = (percent: number) =>
      root.put("/admin/flags/routing_policy/canary", {
        percent,
        value: "force:beta",
        reason: REASON,
      });
    const expected = (percent: number) =>
      TENANTS.map((t) => (bucket(t) < percent ? "beta" : "alpha"));

    ok(await canary(50));
    const half = expected(50);
    assert.ok(half.includes("beta") && half.includes("alpha"), "the sample has both sides");
    assert.deepEqual(await servedEach(gw, TENANTS), half);
    const inside = TENANTS.find((t) => bucket(t) < 50)!;
    assert.deepEqual(await explain(root, "routing_policy", inside), {
      value: "force:beta",
      source: "canary",
    });

    ok(await canary(80));
    const wider = await servedEach(gw, TENANTS);
    assert.deepEqual(wider, expected(80));
    assert.ok(half.every((p, i) => p === "alpha" || wider[i] === "beta"), "no tenant left");

    const promoted = ok(
      await root.post("/admin/flags/routing_policy/canary/promote", {
        reason: REASON,
      }),
    );
    assert.equal(promoted.state.default, "force:beta");
    assert.equal(promoted.state.canary, null);
    assert.ok((await servedEach(gw, TENANTS)).every((p) => p === "beta"), "everyone");
    assertError(
      await root.post("/admin/flags/routing_policy/canary/rollback", { reason: REASON }),
      409,
      "request.invalid",
    );

    ok(await root.put("/admin/flags/routing_policy", { default: "priority", reason: REASON }));
    ok(await canary(50));
    assert.deepEqual(await servedEach(gw, TENANTS), half);
    ok(await root.post("/admin/flags/routing_policy/canary/rollback", { reason: REASON }));
    assert.ok((await servedEach(gw, TENANTS)).every((p) => p === "alpha"), "nobody");

    // The kill switch forces priority over the default and over an override.
    ok(
      await root.put("/admin/flags/routing_policy", {
        default: "force:beta",
        overrides: { [TENANTS[0]]: "cheapest" },
        reason: REASON,
      }),
    );
    assert.ok((await servedEach(gw, TENANTS)).every((p) => p === "beta"));
    ok(await root.post("/admin/flags/routing_policy/kill", { reason: REASON }));
    assert.ok((await servedEach(gw, TENANTS)).every((p) => p === "alpha"), "killed: priority");
    assert.deepEqual(await explain(root, "routing_policy", TENANTS[0]), {
      value: "priority",
      source: "killed",
    });
    ok(await root.del(withReason("/admin/flags/routing_policy/kill")));
    assert.ok((await servedEach(gw, TENANTS)).every((p) => p === "beta"), "restored");
  });
});

Deno.test("flag rollback undoes the newest change and a second re-applies it; every change is audited", async () => {
  await withGateway(async (gw, root) => {
    ok(
      await root.put(
        "/admin/flags/routing_policy",
        { default: "force:beta", reason: "move traffic to beta" },
        "req-flag-1",
      ),
    );
    ok(
      await root.put(
        "/admin/flags/voice_mode/overrides/acme",
        { value: "off", reason: "acme voice incident" },
        "req-flag-2",
      ),
    );
    const voiceOf = async () => (await explain(root, "voice_mode", "acme")).value;
    assert.equal(await voiceOf(), "off");

    const first = ok(await root.post("/admin/flags/rollback", { reason: "undo 1" }, "req-rb-1"));
    assert.equal(first.flag, "voice_mode", "the newest change is undone");
    assert.equal(await voiceOf(), "on");
    assert.equal(await servedBy(gw, "acme"), "beta", "the older change stays");

    const second = ok(await root.post("/admin/flags/rollback", { reason: "undo 2" }, "req-rb-2"));
    assert.equal(second.flag, "voice_mode");
    assert.equal(await voiceOf(), "off", "rolling back the rollback re-applies the change");

    const entries = await audit(gw, root, { action: "flag." });
    const summary = entries.map((e: Json) => [e.action, e.target, e.request_id, e.reason]);
    assert.deepEqual(summary, [
      ["flag.rollback", "flag:voice_mode", "req-rb-2", "undo 2"],
      ["flag.rollback", "flag:voice_mode", "req-rb-1", "undo 1"],
      ["flag.override.set", "flag:voice_mode", "req-flag-2", "acme voice incident"],
      ["flag.update", "flag:routing_policy", "req-flag-1", "move traffic to beta"],
    ]);
    for (const e of entries) {
      assert.equal(e.actor, "root");
      assert.equal(e.actor_tenant, "ops");
    }
    const [rb2, rb1, override, update] = entries;
    assert.equal(update.before, null, "the flag had no stored state");
    assert.equal(update.after.default, "force:beta");
    assert.equal(override.before, null, "voice_mode had no stored state either");
    assert.deepEqual(override.after.overrides, { acme: "off" });
    assert.deepEqual(rb1.before.overrides, { acme: "off" });
    assert.deepEqual(rb1.after.overrides, {});
    assert.deepEqual(rb2.before.overrides, {});
    assert.deepEqual(rb2.after.overrides, { acme: "off" });

    const verdict = ok(await root.get("/admin/audit/verify"));
    assert.equal(verdict.ok, true);
    assert.equal(verdict.rows, 4);
  });
});

Deno.test("flag validation: unknown flag 404, bad values 400 naming the field, reason required", async () => {
  await withGateway(async (gw, root) => {
    const bad = { default: "priority", reason: REASON };
    assertError(await root.put("/admin/flags/no_such_flag", bad), 404, "request.invalid");
    assertError(
      await root.post("/admin/flags/no_such_flag/kill", { reason: REASON }),
      404,
      "request.invalid",
    );
    assertError(
      await root.put("/admin/flags/voice_mode", { default: "loud", reason: REASON }),
      400,
      "request.invalid",
      "default",
    );
    const override = await root.put("/admin/flags/routing_policy/overrides/acme", {
      value: "fastest",
      reason: REASON,
    });
    assertError(override, 400, "request.invalid", "overrides.acme");
    assert.match(override.json.error.message, /routing_policy/);
    assertError(
      await root.put("/admin/flags/routing_policy", { default: "force:nowhere", reason: REASON }),
      400,
      "request.invalid",
      "default",
    );
    assertError(
      await root.put("/admin/flags/plugin_permissions/canary", {
        percent: 10,
        value: ["net.ftp"],
        reason: REASON,
      }),
      400,
      "request.invalid",
      "canary.value",
    );
    assertError(
      await root.put("/admin/flags/voice_mode/canary", {
        percent: 101,
        value: "off",
        reason: REASON,
      }),
      400,
      "request.invalid",
      "percent",
    );
    assertError(
      await root.put("/admin/flags/voice_mode", { default: "off" }),
      400,
      "request.invalid",
      "reason",
    );
    assertError(
      await root.post("/admin/flags/voice_mode/kill", { reason: "" }),
      400,
      "request.invalid",
      "reason",
    );
    assertError(
      await root.del("/admin/flags/voice_mode/kill"),
      400,
      "request.invalid",
      "reason",
    );

    // Nothing was changed or audited, and traffic is as before.
    const flags = ok(await root.get("/admin/flags")).flags;
    assert.equal(flags.voice_mode.default, "on");
    assert.equal(flags.routing_policy.default, "priority");
    assert.equal(flags.voice_mode.killed, false);
    assert.deepEqual(await audit(gw, root, { action: "flag." }), []);
    assert.equal(await servedBy(gw, "acme"), "alpha");
  });
});
