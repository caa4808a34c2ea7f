import assert from "node:assert/strict";
import { ConfigError, EMBEDDED_DEFAULTS, loadConfig } from "../src/config.ts";

const noFile = () => {
  throw new Error("no file expected");
};

Deno.test("embedded defaults need no env and no file", () => {
  const cfg = loadConfig({}, noFile);
  assert.equal(cfg.server.host, "127.0.0.1");
  assert.equal(cfg.server.port, 8080);
  assert.equal(cfg.server.max_body_bytes, 1_048_576);
  assert.equal(cfg.routing.timeout_ms, 30_000);
  assert.equal(cfg.routing.first_byte_timeout_ms, 10_000);
  assert.deepEqual(Object.keys(cfg.models), Object.keys(EMBEDDED_DEFAULTS.models));
  assert.equal(cfg.providers.demo.protocol, "mock");
  assert.equal(cfg.tenant_defaults.monthly_budget_usd, 20);
  assert.equal(cfg.auth.jwt_secret, undefined);
  assert.deepEqual(cfg.guardrails.local_admission, {
    enabled: true,
    fresh_ms: 1000,
    max_in_flight: 32,
  });
  assert.equal(
    loadConfig({ LOCAL_ADMISSION: "off" }, noFile).guardrails.local_admission.enabled,
    false,
  );
});

Deno.test("env overrides the file, and secrets resolve from env: references", () => {
  const file = {
    server: { port: 9000 },
    providers: {
      oa: { protocol: "openai", base_url: "https://api.openai.com/v1", api_key: "env:OA_KEY" },
      az: {
        protocol: "openai",
        flavor: "azure",
        base_url: "https://x.openai.azure.com",
        api_version: "2024-10-21",
        api_key: "literal-key",
      },
      an: { protocol: "anthropic", api_key: "env:AN_KEY" },
    },
    models: {
      fast: {
        deployments: [{ provider: "oa", model: "gpt-4o-mini" }, {
          provider: "an",
          model: "claude",
        }],
        price: { input_per_1m: 0.15, output_per_1m: 0.6 },
      },
    },
    tenants: { acme: { byok_keys: { oa: "env:ACME_KEY" } } },
  };
  const cfg = loadConfig({
    GATEWAY_CONFIG: "/etc/gw.json",
    PORT: "7000",
    HOST: "0.0.0.0",
    OA_KEY: "sk-oa",
    AN_KEY: "sk-an",
    ACME_KEY: "sk-acme",
    JWT_ALGORITHMS: "ES256, EdDSA",
    JWT_AUDIENCE: "convergio",
  }, (path) => {
    assert.equal(path, "/etc/gw.json");
    return JSON.stringify(file);
  });
  assert.equal(cfg.server.port, 7000);
  assert.equal(cfg.server.host, "0.0.0.0");
  assert.deepEqual(cfg.auth.jwks_algorithms, ["ES256", "EdDSA"]);
  assert.equal(cfg.auth.audience, "convergio");
  const oa = cfg.providers.oa;
  assert.ok(oa.protocol === "openai" && oa.api_key?.reveal() === "sk-oa");
  assert.equal(cfg.tenants.acme.byok_keys.oa.reveal(), "sk-acme");
  assert.equal(cfg.models.fast.max_output_tokens, 4096);
  const printed = JSON.stringify(cfg) + String(cfg.tenants.acme.byok_keys.oa) +
    Deno.inspect(cfg, { depth: 10 });
  for (const secret of ["sk-oa", "sk-an", "sk-acme", "literal-key"]) {
    assert.ok(!printed.includes(secret), `${secret} leaked`);
  }
});

Deno.test("a bad config is one ConfigError naming each offending field", () => {
  const cases: Array<[Record<string, string>, string | undefined, RegExp]> = [
    [{ PORT: "http" }, undefined, /^config error: server\.port: /],
    [{ PORT: "70000" }, undefined, /server\.port: .*65535/],
    [
      { GATEWAY_CONFIG: "f" },
      JSON.stringify({ providers: { x: { protocol: "carrier-pigeon" } } }),
      /providers\.x\.protocol/,
    ],
    [
      { GATEWAY_CONFIG: "f" },
      JSON.stringify({
        models: {
          m: {
            deployments: [{ provider: "ghost", model: "y" }],
            price: { input_per_1m: 1, output_per_1m: 1 },
          },
        },
      }),
      /models\.m\.deployments\.0\.provider: unknown provider "ghost"/,
    ],
    [
      { GATEWAY_CONFIG: "f" },
      JSON.stringify({
        providers: { o: { protocol: "openai", base_url: "https://a", api_key: "env:MISSING" } },
      }),
      /providers\.o\.api_key: environment variable MISSING is not set/,
    ],
    [
      { GATEWAY_CONFIG: "f" },
      JSON.stringify({
        providers: { o: { protocol: "openai", flavor: "azure", base_url: "https://a" } },
      }),
      /providers\.o\.api_version: api_version is required/,
    ],
    [
      { GATEWAY_CONFIG: "f" },
      JSON.stringify({ default_model: "nope" }),
      /default_model: unknown model/,
    ],
    [
      { GATEWAY_CONFIG: "f", JWKS_URL: "https://idp/jwks", JWKS_FILE: "/j.json" },
      "{}",
      /auth\.jwks_file: set jwks_url or jwks_file, not both/,
    ],
    [{ JWT_ALGORITHMS: "none" }, undefined, /auth\.jwks_algorithms\.0/],
    [{ GATEWAY_CONFIG: "f" }, "{not json", /not valid JSON/],
    [{ GATEWAY_CONFIG: "f" }, "[1]", /must hold a JSON object/],
    [
      { GATEWAY_CONFIG: "f" },
      JSON.stringify({ routing: { timeout_msec: 5 } }),
      /routing: Unrecognized key: "timeout_msec"/,
    ],
    [{ ROLE: "edge" }, undefined, /metering\.secret: METERING_SECRET is required/],
    [
      { ROLE: "edge", METERING_SECRET: "s" },
      undefined,
      /metering\.aggregator_url: AGGREGATOR_URL is required/,
    ],
  ];
  for (const [env, file, expected] of cases) {
    assert.throws(
      () => loadConfig(env, () => file!),
      (err) => err instanceof ConfigError && expected.test(err.message),
      expected.source,
    );
  }
  assert.throws(
    () =>
      loadConfig({ GATEWAY_CONFIG: "/missing.json" }, () => {
        throw new Deno.errors.NotFound("gone");
      }),
    /cannot read GATEWAY_CONFIG file \/missing\.json/,
  );
});

Deno.test("the shipped production example config is valid", () => {
  const cfg = loadConfig({
    GATEWAY_CONFIG: "infra/config/gateway.example.json",
    JWT_SECRET: "s",
    OPENAI_API_KEY: "a",
    AZURE_OPENAI_API_KEY: "b",
    ANTHROPIC_API_KEY: "c",
    ACME_OPENAI_KEY: "d",
  }, Deno.readTextFileSync);
  assert.equal(cfg.default_model, "gpt-4o-mini");
  assert.equal(cfg.models["gpt-4o-mini"].deployments.length, 2);
});
