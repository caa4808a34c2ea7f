import assert from "node:assert/strict";
import type { FlagState } from "../../src/control/flags.ts";
import type { MitigationName } from "../../src/control/mitigations.ts";
import { type RoutePolicy, routePolicy } from "../../src/control/route_policy.ts";
import { ControlView } from "../../src/control/view.ts";
import type { Config } from "../../src/config.ts";
import { createRouter } from "../../src/providers/router.ts";
import { type ProviderAdapter, ProviderError } from "../../src/providers/types.ts";
import { snapshot } from "../support/control.ts";
import { testConfig } from "../support/gateway.ts";
import { mitigationState } from "./_helpers.ts";

const price = (usd: number) => ({ input_per_1m: usd, output_per_1m: usd });

/** Alias `m`: a1 costs 10, b1 costs 2, c1 names no cost (the alias price, 6); priority a, b, c. */
function routedConfig(): Config {
  return testConfig({
    providers: { a: { protocol: "mock" }, b: { protocol: "mock" }, c: { protocol: "mock" } },
    models: {
      m: {
        deployments: [
          { provider: "a", model: "a1", cost: price(5) },
          { provider: "b", model: "b1", cost: price(1) },
          { provider: "c", model: "c1" },
        ],
        price: price(3),
      },
    },
    routing: { backoff_ms: 0, max_attempts: 3 },
  });
}

/** A view whose routing_policy flag has this default, with these mitigations active. */
function view(
  flag: Partial<FlagState> = {},
  mitigations: Partial<Record<MitigationName, Record<string, unknown>>> = {},
): ControlView {
  return new ControlView(
    testConfig(),
    snapshot({
      flags: {
        routing_policy: {
          default: "priority",
          overrides: {},
          canary: null,
          killed: false,
          ...flag,
        },
      },
      mitigations: Object.fromEntries(
        Object.entries(mitigations).map(([name, params]) => [name, mitigationState({ params })]),
      ),
    }),
  );
}

/**
 * Routes one request to alias `m` with adapters that fail unless their
 * provider is in `healthy`; returns what served and every deployment tried.
 */
async function route(policy: RoutePolicy | undefined, healthy: string[] = []) {
  const config = routedConfig();
  const tried: string[] = [];
  const adapter = (provider: string): ProviderAdapter => ({
    needsKey: false,
    complete(call) {
      tried.push(call.request.model);
      if (!healthy.includes(provider)) {
        return Promise.reject(new ProviderError("server", `${provider} is down`));
      }
      const usage = { input_tokens: 1, output_tokens: 1 };
      return Promise.resolve({
        text: provider,
        tool_calls: [],
        finish_reason: "stop",
        usage,
        model: call.request.model,
      });
    },
    stream: () => {
      throw new Error("not streamed here");
    },
  });
  const router = createRouter({
    config,
    adapters: { a: adapter("a"), b: adapter("b"), c: adapter("c") },
    clock: { now: Date.now },
  });
  const served = await router.complete({
    alias: "m",
    model: config.models.m,
    request: { model: "m", messages: [{ role: "user", content: "hi" }] },
    mode: "managed",
    tenantId: "t1",
    signal: new AbortController().signal,
    policy,
  }).then((r) => `${r.provider}/${r.deployment}`, () => "none");
  return { served, tried };
}

Deno.test("routePolicy: the flag's priority and cheapest orders", () => {
  assert.deepEqual(routePolicy(view(), "t1"), { order: "priority", avoid: undefined });
  assert.deepEqual(routePolicy(view({ default: "cheapest" }), "t1"), {
    order: "cheapest",
    avoid: undefined,
  });
});

Deno.test("routePolicy: force:<provider> keeps priority order with that provider forced", () => {
  assert.deepEqual(routePolicy(view({ default: "force:c" }), "t1"), {
    order: "priority",
    force: "c",
    avoid: undefined,
  });
});

Deno.test("routePolicy: each tenant gets its own flag value; the kill switch forces priority", () => {
  const v = view({ default: "priority", overrides: { t2: "cheapest" } });
  assert.equal(routePolicy(v, "t1").order, "priority");
  assert.equal(routePolicy(v, "t2").order, "cheapest");
  const killed = view({ default: "force:c", overrides: { t2: "cheapest" }, killed: true });
  assert.deepEqual(routePolicy(killed, "t2"), { order: "priority", avoid: undefined });
});

Deno.test("routePolicy: force_cheaper_provider beats the flag; avoid_provider adds to any", () => {
  const mitigated = view({ default: "force:c" }, {
    force_cheaper_provider: {},
    avoid_provider: { provider: "b" },
  });
  assert.deepEqual(routePolicy(mitigated, "t1"), { order: "cheapest", avoid: "b" });
  assert.deepEqual(
    routePolicy(view({ default: "force:c" }, { avoid_provider: { provider: "a" } }), "t1"),
    {
      order: "priority",
      force: "c",
      avoid: "a",
    },
  );
});

/** Each policy's deployment order: what is tried when all fail, and what serves when all work. */
const ORDERS: Array<[string, RoutePolicy | undefined, string[]]> = [
  ["no policy: config order", undefined, ["a1", "b1", "c1"]],
  ["priority: config order", { order: "priority" }, ["a1", "b1", "c1"]],
  ["cheapest: by cost, the alias price standing in", { order: "cheapest" }, ["b1", "c1", "a1"]],
  ["force: only that provider", { order: "priority", force: "c" }, ["c1", "c1", "c1"]],
  ["force on a provider the alias lacks: all", { order: "priority", force: "z" }, [
    "a1",
    "b1",
    "c1",
  ]],
  ["avoid: that provider last", { order: "priority", avoid: "a" }, ["b1", "c1", "a1"]],
  ["cheapest and avoid", { order: "cheapest", avoid: "b" }, ["c1", "a1", "b1"]],
];

for (const [name, policy, order] of ORDERS) {
  Deno.test(`router: ${name}`, async () => {
    assert.deepEqual(await route(policy), { served: "none", tried: order });
    assert.deepEqual(await route(policy, ["a", "b", "c"]), {
      served: `${order[0][0]}/${order[0]}`,
      tried: [order[0]],
    });
  });
}

Deno.test("router: an avoided provider still serves when the others fail", async () => {
  assert.deepEqual(await route({ order: "priority", avoid: "a" }, ["a"]), {
    served: "a/a1",
    tried: ["b1", "c1", "a1"],
  });
});

Deno.test("router: the view's mitigations reach the router through routePolicy", async () => {
  const v = view({ default: "cheapest" }, { avoid_provider: { provider: "b" } });
  assert.deepEqual(await route(routePolicy(v, "t1"), ["a", "b", "c"]), {
    served: "c/c1",
    tried: ["c1"],
  });
});
