import assert from "node:assert/strict";
import { type ControlSnapshot, emptySnapshot } from "../../src/control/snapshot.ts";
import { ControlView } from "../../src/control/view.ts";
import type { Config } from "../../src/config.ts";
import { snapshot } from "../support/control.ts";
import { testConfig } from "../support/gateway.ts";
import { mitigationState, tenantSettings } from "./_helpers.ts";

const price = (i: number, o: number) => ({ input_per_1m: i, output_per_1m: o });

/** Two providers, two aliases, a plan and one tenant with a BYOK key, all from the file. */
function fileConfig(): Config {
  return testConfig({
    providers: { demo: { protocol: "mock" }, other: { protocol: "mock" } },
    models: {
      big: { deployments: [{ provider: "demo", model: "big-1" }], price: price(10, 20) },
      small: {
        deployments: [{ provider: "demo", model: "small-1" }],
        price: price(1, 2),
        max_output_tokens: 256,
      },
    },
    plans: { pro: { rpm: 100, daily_budget_usd: 50 } },
    tenants: {
      acme: {
        byok_keys: { demo: "sk-acme" },
        plan: "pro",
        limits: { rpm: 50, tpm: 1_000 },
        downgrade_model: "small",
      },
    },
  });
}

/** The config's sections as the file gave them, kept before any view touches them. */
const sections = (c: Config) => ({ tenants: c.tenants, plans: c.plans, models: c.models });

/** The file's config with a view over it that applied a snapshot of `parts`. */
function overlaid(parts: Partial<ControlSnapshot>) {
  const config = fileConfig();
  const file = sections(config);
  return { config, file, view: new ControlView(config, snapshot(parts)) };
}

Deno.test("a snapshot tenant is laid over the file's: limits merged, byok keys kept", () => {
  const { config, file } = overlaid({
    tenants: { acme: tenantSettings({ limits: { tpm: 2_000, daily_budget_usd: 3 } }) },
  });
  const acme = config.tenants.acme;
  assert.equal(acme.byok_keys, file.tenants.acme.byok_keys);
  assert.equal(acme.byok_keys.demo.reveal(), "sk-acme");
  assert.equal(acme.plan, "pro");
  assert.equal(acme.downgrade_model, "small");
  assert.deepEqual(acme.limits, { rpm: 50, tpm: 2_000, daily_budget_usd: 3 });
});

Deno.test("a snapshot tenant's own plan and downgrade model win over the file's", () => {
  const { config } = overlaid({
    tenants: { acme: tenantSettings({ plan: "gold", downgrade_model: "big" }) },
    plans: { gold: { rpm: 7 } },
  });
  assert.equal(config.tenants.acme.plan, "gold");
  assert.equal(config.tenants.acme.downgrade_model, "big");
});

Deno.test("tenants and plans only the admin API knows are added", () => {
  const { config } = overlaid({
    tenants: { newco: tenantSettings({ plan: "gold", limits: { rpm: 9 } }) },
    plans: { gold: { rpm: 7 } },
  });
  assert.deepEqual(config.tenants.newco, {
    byok_keys: {},
    plan: "gold",
    limits: { rpm: 9 },
    downgrade_model: undefined,
  });
  assert.deepEqual(config.plans, { pro: { rpm: 100, daily_budget_usd: 50 }, gold: { rpm: 7 } });
  assert.equal(config.tenants.acme.plan, "pro");
});

Deno.test("a model override changes price and deployments, other fields stay", () => {
  const { config } = overlaid({
    models: {
      small: { price: price(3, 4), deployments: [{ provider: "other", model: "o-small" }] },
      big: { price: null, deployments: null },
    },
  });
  assert.deepEqual(config.models.small, {
    price: price(3, 4),
    deployments: [{ provider: "other", model: "o-small" }],
    max_output_tokens: 256,
  });
  assert.deepEqual(config.models.big.price, price(10, 20));
  assert.deepEqual(config.models.big.deployments, [{ provider: "demo", model: "big-1" }]);
});

Deno.test("deployments on unknown providers and overrides of unknown aliases are ignored", () => {
  const { config } = overlaid({
    models: {
      big: {
        price: null,
        deployments: [{ provider: "ghost", model: "g" }, { provider: "other", model: "o-big" }],
      },
      small: { price: null, deployments: [{ provider: "ghost", model: "g" }] },
      nope: { price: price(1, 1), deployments: null },
    },
  });
  assert.deepEqual(config.models.big.deployments, [{ provider: "other", model: "o-big" }]);
  assert.deepEqual(config.models.small.deployments, [{ provider: "demo", model: "small-1" }]);
  assert.equal(config.models.nope, undefined);
});

Deno.test("applying an empty snapshot brings back the file's values", () => {
  const { config, file, view } = overlaid({
    tenants: { acme: tenantSettings({ plan: "gold" }), newco: tenantSettings() },
    plans: { gold: { rpm: 7 }, pro: { rpm: 1 } },
    models: { big: { price: price(0, 0), deployments: null } },
  });
  assert.equal(config.tenants.acme.plan, "gold");
  view.apply(emptySnapshot());
  assert.equal(view.version, "empty");
  assert.deepEqual(sections(config), sections(fileConfig()));
  assert.equal(config.tenants.acme, file.tenants.acme);
  assert.equal(config.models.big, file.models.big);
});

Deno.test("a later snapshot replaces the earlier one rather than adding to it", () => {
  const { config, view } = overlaid({ tenants: { a: tenantSettings() } });
  view.apply(snapshot({ version: "v2", tenants: { b: tenantSettings() } }));
  assert.equal(view.version, "v2");
  assert.deepEqual(Object.keys(config.tenants).sort(), ["acme", "b"]);
});

Deno.test("flag() and explain() evaluate the snapshot's flags per tenant", () => {
  const { view } = overlaid({
    flags: {
      voice_mode: { default: "on", overrides: { acme: "off" }, canary: null, killed: false },
    },
  });
  assert.equal(view.flag("voice_mode", "acme"), "off");
  assert.deepEqual(view.explain("voice_mode", "acme"), { value: "off", source: "override" });
  assert.deepEqual(view.explain("voice_mode", "other"), { value: "on", source: "default" });
  assert.equal(view.flag("routing_policy", "acme"), "priority");
});

Deno.test("mitigation() returns an active mitigation's state, undefined otherwise", () => {
  const state = mitigationState({ params: { provider: "demo" } });
  const { view } = overlaid({ mitigations: { avoid_provider: state } });
  assert.deepEqual(view.mitigation("avoid_provider"), state);
  assert.equal(view.mitigation("voice_text"), undefined);
});

Deno.test("tools(), createdAt(), isKnownTenant() and inConfigFile() tell the tenants apart", () => {
  const { view } = overlaid({
    tenants: {
      listed: tenantSettings({ tools: ["search"], created_at: "2026-03-04T05:06:07.000Z" }),
      open: tenantSettings(),
    },
  });
  assert.deepEqual(view.tools("listed"), ["search"]);
  assert.equal(view.tools("open"), null);
  assert.equal(view.tools("acme"), null);
  assert.equal(view.createdAt("listed"), Date.UTC(2026, 2, 4, 5, 6, 7));
  assert.equal(view.createdAt("acme"), undefined);
  assert.equal(view.isKnownTenant("listed"), true);
  assert.equal(view.isKnownTenant("acme"), true);
  assert.equal(view.isKnownTenant("stranger"), false);
  assert.equal(view.inConfigFile("acme"), true);
  assert.equal(view.inConfigFile("listed"), false);
});

Deno.test("a view with no snapshot leaves config as it was", () => {
  const config = fileConfig();
  const file = sections(config);
  const view = new ControlView(config);
  assert.equal(view.version, "empty");
  assert.equal(config.tenants, file.tenants);
  assert.equal(view.mitigation("read_only"), undefined);
});
