import assert from "node:assert/strict";
import {
  buildPlan,
  commandLine,
  dotenvQuote,
  EDGE_VARS,
  ENTRYPOINT,
  ENV_FILE,
  envFileText,
  type Plan,
  PlanError,
  type PlanInput,
  redact,
  REDACTED,
  renderPlan,
} from "../../src/deploy/plan.ts";
import { minimalMapping, SECRETS, type Var } from "./_fixtures.ts";

const ROOT = new URL("../../", import.meta.url);
const readRepoFile = (path: string) => Deno.readTextFileSync(new URL(path, ROOT));

function plan(overrides: Partial<PlanInput> = {}): Plan {
  return buildPlan({
    mapping: minimalMapping(),
    env: SECRETS,
    readFile: readRepoFile,
    ...overrides,
  });
}

/** The problems buildPlan reports for a mapping. */
function problems(mapping: unknown, env: Record<string, string> = SECRETS): string[] {
  try {
    buildPlan({ mapping, env, readFile: readRepoFile });
  } catch (err) {
    assert.ok(err instanceof PlanError, String(err));
    return err.problems;
  }
  assert.fail("the mapping was accepted");
}

function assertProblem(found: string[], pattern: RegExp) {
  assert.ok(
    found.some((p) => pattern.test(p)),
    `no problem matches ${pattern}:\n${found.join("\n")}`,
  );
}

Deno.test("plan: maps the file to Deno Deploy variables, pins ROLE=edge and the Redis store", () => {
  const p = plan();
  assert.equal(p.org, "convergio");
  assert.equal(p.app, "convergio-edge");
  assert.equal(p.entrypoint, ENTRYPOINT);
  assert.equal(p.entrypoint, "src/main.ts");
  assert.equal(p.role, "edge");
  assert.deepEqual(p.vars.map((v) => [v.name, v.secret, v.origin]), [
    ["ROLE", false, "pinned"],
    ["BUDGET_STORE", false, "pinned"],
    ["AGGREGATOR_URL", false, "literal"],
    ["METERING_SECRET", true, "env:CVG_METERING_SECRET"],
    ["JWT_SECRET", true, "env:CVG_JWT_SECRET"],
    ["REDIS_REST_URL", false, "literal"],
    ["REDIS_REST_TOKEN", true, "env:CVG_REDIS_REST_TOKEN"],
    ["BYOK_MASTER_KEYS", true, "console"],
  ]);
  const byName = Object.fromEntries(p.vars.map((v) => [v.name, v.value]));
  assert.equal(byName.ROLE, "edge");
  assert.equal(byName.BUDGET_STORE, "redis");
  assert.equal(byName.METERING_SECRET, SECRETS.CVG_METERING_SECRET);
  // Repeating a pinned value is fine.
  const again = buildPlan({
    mapping: minimalMapping([{ target: "ROLE", value: "edge" }]),
    env: SECRETS,
    readFile: readRepoFile,
  });
  assert.equal(again.vars.filter((v) => v.name === "ROLE").length, 1);
});

Deno.test("plan: preview only by default; --promote adds the production deployment", () => {
  const preview = plan();
  assert.deepEqual(preview.steps.map((s) => s.kind), [
    "env-load",
    "env-verify",
    "deploy",
    "healthz",
  ]);
  assert.equal(preview.promote, false);
  const deploy = preview.steps[2];
  assert.ok(deploy.kind === "deploy");
  assert.equal(deploy.timeline, "preview");
  assert.deepEqual(deploy.argv, [
    "deploy",
    "--org",
    "convergio",
    "--app",
    "convergio-edge",
    "--non-interactive",
    "--json",
    ".",
  ]);
  assert.ok(!preview.steps.some((s) => "argv" in s && s.argv.includes("--prod")));

  const promoted = plan({ promote: true });
  assert.deepEqual(promoted.steps.map((s) => s.kind), [
    "env-load",
    "env-verify",
    "deploy",
    "healthz",
    "deploy",
    "healthz",
  ]);
  const prod = promoted.steps[4];
  assert.ok(prod.kind === "deploy" && prod.timeline === "production");
  assert.deepEqual(prod.argv.slice(-2), ["--prod", "."]);
  const health = promoted.steps[5];
  assert.ok(health.kind === "healthz" && health.timeline === "production");
});

Deno.test("plan: env load marks every non-secret explicitly and never names a secret as plain", () => {
  const p = plan();
  const load = p.steps[0];
  assert.ok(load.kind === "env-load");
  assert.deepEqual(load.argv.slice(0, 9), [
    "deploy",
    "env",
    "load",
    "--org",
    "convergio",
    "--app",
    "convergio-edge",
    "--non-interactive",
    "--replace",
  ]);
  assert.equal(load.argv[9], ENV_FILE);
  const plain = load.argv.slice(load.argv.indexOf("--non-secrets") + 1);
  assert.deepEqual(plain, ["ROLE", "BUDGET_STORE", "AGGREGATOR_URL", "REDIS_REST_URL"]);
  const verify = p.steps[1];
  assert.ok(verify.kind === "env-verify");
  assert.ok(verify.argv.includes("--json"));
});

Deno.test("plan: --create creates a dynamic app on src/main.ts and implies promotion", () => {
  const p = plan({ create: true });
  const create = p.steps[0];
  assert.ok(create.kind === "create");
  const flag = (name: string) => create.argv[create.argv.indexOf(name) + 1];
  assert.equal(flag("--entrypoint"), "src/main.ts");
  assert.equal(flag("--runtime-mode"), "dynamic");
  assert.equal(flag("--source"), "local");
  assert.equal(flag("--region"), "global");
  // The create publishes a production revision with no variables: promotion replaces it.
  assert.equal(p.promote, true);
  assert.ok(p.steps.some((s) => s.kind === "deploy" && s.timeline === "production"));
});

Deno.test("plan: refuses missing required variables and secrets, naming each", () => {
  const found = problems({ org: "convergio", app: "edge", vars: [] });
  for (const name of ["AGGREGATOR_URL", "METERING_SECRET", "JWT_SECRET", "REDIS_REST_URL"]) {
    assertProblem(found, new RegExp(`^${name}: required for role edge`));
  }
  assertProblem(found, /^REDIS_REST_TOKEN: required for role edge/);

  const unset = problems(minimalMapping(), { CVG_JWT_SECRET: SECRETS.CVG_JWT_SECRET });
  assertProblem(unset, /^METERING_SECRET: env:CVG_METERING_SECRET is not set/);
  assertProblem(unset, /^REDIS_REST_TOKEN: env:CVG_REDIS_REST_TOKEN is not set/);
  assert.equal(unset.length, 2, unset.join("\n"));
  const empty = problems(minimalMapping(), { ...SECRETS, CVG_JWT_SECRET: "" });
  assertProblem(empty, /^JWT_SECRET: env:CVG_JWT_SECRET is not set/);
});

Deno.test("plan: secrets must come from the environment, be declared secret and be long", () => {
  const m = minimalMapping();
  m.vars[1] = { target: "METERING_SECRET", value: "a-literal-secret-in-a-file", secret: true };
  assertProblem(problems(m), /^METERING_SECRET: a secret's value must be env:NAME/);

  const undeclared = minimalMapping();
  undeclared.vars[2] = { target: "JWT_SECRET", value: "env:CVG_JWT_SECRET" };
  assertProblem(problems(undeclared), /^JWT_SECRET: is a credential; declare it "secret": true/);

  assertProblem(
    problems(minimalMapping(), { ...SECRETS, CVG_METERING_SECRET: "short" }),
    /^METERING_SECRET: too short for a secret/,
  );

  // env load would store this name as plain text.
  const webhook = minimalMapping([
    { target: "ALERT_WEBHOOK_URL", value: "env:CVG_HOOK", secret: true },
  ]);
  assertProblem(
    problems(webhook, { ...SECRETS, CVG_HOOK: "https://hooks.example.com/0123456789abcdef" }),
    /^ALERT_WEBHOOK_URL: `deno deploy env load` keeps only names with KEY, SECRET, TOKEN.*"console": true$/,
  );
});

Deno.test("plan: BYOK needs the aggregator's master keys, or Key Vault by client credentials", () => {
  const base = minimalMapping().vars.filter((v) => v.target !== "BYOK_MASTER_KEYS");
  const mapping = (extra: Var[]) => ({ ...minimalMapping(), vars: [...base, ...extra] });
  assertProblem(
    problems(mapping([])),
    /^BYOK_MASTER_KEYS: required for role edge with the local BYOK store/,
  );
  assertProblem(
    problems(mapping([{ target: "BYOK_STORE", value: "azure_key_vault" }])),
    /^BYOK_AZURE_AUTH: must be client_credentials: Deno Deploy has no managed identity/,
  );
  const vault = buildPlan({
    mapping: mapping([
      { target: "BYOK_STORE", value: "azure_key_vault" },
      { target: "BYOK_AZURE_AUTH", value: "client_credentials" },
      { target: "BYOK_AZURE_VAULT_URL", value: "https://convergio.vault.azure.net" },
      { target: "BYOK_AZURE_TENANT_ID", value: "tenant" },
      { target: "BYOK_AZURE_CLIENT_ID", value: "client" },
      { target: "BYOK_AZURE_CLIENT_SECRET", value: "env:CVG_AZ", secret: true },
    ]),
    env: { ...SECRETS, CVG_AZ: "azure-client-secret-0123456789" },
    readFile: readRepoFile,
  });
  assert.ok(vault.vars.some((v) => v.name === "BYOK_AZURE_CLIENT_SECRET" && v.secret));
  // The gateway's own schema still runs: client_credentials needs all three fields.
  assertProblem(
    problems(mapping([
      { target: "BYOK_STORE", value: "azure_key_vault" },
      { target: "BYOK_AZURE_AUTH", value: "client_credentials" },
      { target: "BYOK_AZURE_VAULT_URL", value: "https://convergio.vault.azure.net" },
    ])),
    /^gateway config: byok\.azure: client_credentials needs tenant_id, client_id and client_secret/,
  );
});

Deno.test("plan: console-set secrets are checked, never written; misuse is refused", () => {
  const found = problems(minimalMapping([
    { target: "OPENAI_API_KEY", console: true },
    { target: "ANTHROPIC_API_KEY", secret: true, console: true, value: "env:X" },
    { target: "JWT_AUDIENCE" },
  ]));
  assertProblem(found, /^OPENAI_API_KEY: "console": true is for secrets set by hand/);
  assertProblem(found, /^ANTHROPIC_API_KEY: "console": true is for secrets set by hand/);
  assertProblem(found, /^JWT_AUDIENCE: needs a value \(or "console": true/);
  const text = renderPlan(plan(), { dryRun: true, tokenSet: false });
  assert.match(text, /BYOK_MASTER_KEYS +\(set in the console\) +\(secret, console\)/);
});

Deno.test("plan: refuses what has no place on a Deno Deploy edge", () => {
  const found = problems(minimalMapping([
    { target: "DATABASE_URL", value: "env:CVG_DB", secret: true },
    { target: "PORT", value: "8080" },
    { target: "DATA_DIR", value: "/data" },
    { target: "METERING_SPOOL_FILE", value: "true" },
    { target: "ROLE", value: "aggregator" },
    { target: "BUDGET_STORE", value: "memory" },
    { target: "DENO_DEPLOYMENT_ID", value: "x" },
    { target: "DENO_DIR", value: "/tmp" },
    { target: "OTEL_DENO", value: "true" },
    { target: "AZURE_CLIENT_ID", value: "x" },
    { target: `K${"X".repeat(128)}`, value: "x" },
    { target: "BIG", value: "x".repeat(16_385) },
  ]));
  assertProblem(found, /^DATABASE_URL: not allowed on a Deno Deploy edge: edges never hold/);
  assertProblem(found, /^PORT: not allowed on a Deno Deploy edge/);
  assertProblem(found, /^DATA_DIR: not allowed on a Deno Deploy edge/);
  assertProblem(found, /^METERING_SPOOL_FILE: not allowed/);
  assertProblem(
    found,
    /^ROLE: must be edge \(this task deploys the edge role only\), not aggregator/,
  );
  assertProblem(found, /^BUDGET_STORE: must be redis/);
  assertProblem(
    found,
    /^DENO_DEPLOYMENT_ID: not allowed on a Deno Deploy edge: Deno Deploy sets it/,
  );
  assertProblem(found, /^DENO_DIR: not allowed by Deno Deploy: DENO_ names are reserved/);
  assertProblem(found, /^OTEL_DENO: not allowed by Deno Deploy: LD_ and OTEL_/);
  assertProblem(
    found,
    /^AZURE_CLIENT_ID: not allowed by Deno Deploy: reserved for Cloud Connections/,
  );
  assertProblem(found, /^KX+: not allowed by Deno Deploy: longer than 128 bytes/);
  assertProblem(found, /^BIG: longer than Deno Deploy's 16384 bytes/);
  // Names Deno Deploy lets through under DENO_.
  const allowed = buildPlan({
    mapping: minimalMapping([{ target: "DENO_AUTH_TOKENS", value: "env:CVG_AUTH", secret: true }]),
    env: { ...SECRETS, CVG_AUTH: "0123456789abcdef@registry.example.com" },
    readFile: readRepoFile,
  });
  assert.ok(allowed.vars.some((v) => v.name === "DENO_AUTH_TOKENS" && v.secret));
});

Deno.test("plan: validates the file's shape and values", () => {
  assertProblem(
    problems({ org: "Convergio!", app: "edge", vars: [] }),
    /^org: must be a Deno Deploy/,
  );
  assertProblem(problems([]), /^\(root\): /);
  assertProblem(
    problems({ org: "o", app: "a", vars: [{ target: "lower", value: "x" }] }),
    /^vars\.0\.target: must be an env var name/,
  );
  assertProblem(problems({ ...minimalMapping(), extra: 1 }), /^\(root\): Unrecognized key/);
  const found = problems(minimalMapping([
    { target: "AGGREGATOR_URL", value: "https://again.example.com" },
    { target: "JWT_ISSUER", value: `it's "quoted"` },
    { target: "JWT_AUDIENCE", value: "env:lower-case" },
  ]));
  assertProblem(found, /^AGGREGATOR_URL: declared twice/);
  assertProblem(found, /^JWT_ISSUER: the value has a line break, or both ' and " quotes/);
  assertProblem(found, /^JWT_AUDIENCE: env:lower-case is not an env var name/);

  const http = minimalMapping();
  http.vars[0] = { target: "AGGREGATOR_URL", value: "http://aggregator.example.com" };
  http.vars[3] = { target: "REDIS_REST_URL", value: "http://edge.upstash.io" };
  const insecure = problems(http);
  assertProblem(insecure, /^AGGREGATOR_URL: must be an https:\/\/ URL/);
  assertProblem(insecure, /^REDIS_REST_URL: must be an https:\/\/ URL/);
});

Deno.test("plan: runs the gateway's own config validation over the edge environment", () => {
  // The example config reads provider keys through env:NAME; unmapped ones are caught.
  const unmapped = problems(minimalMapping([
    { target: "GATEWAY_CONFIG", value: "infra/config/gateway.example.json" },
  ]));
  assertProblem(
    unmapped,
    /^gateway config: providers\.openai\.api_key: environment variable OPENAI_API_KEY is not set/,
  );
  assertProblem(
    unmapped,
    /^gateway config: tenants\.acme\.byok_keys\.openai: environment variable ACME_OPENAI_KEY/,
  );
  assertProblem(
    problems(minimalMapping([{ target: "LOG_LEVEL", value: "verbose" }])),
    /^gateway config: observability\.log_level: /,
  );
  assertProblem(
    problems(minimalMapping([{ target: "GATEWAY_CONFIG", value: "infra/config/missing.json" }])),
    /^gateway config: .*cannot read GATEWAY_CONFIG file infra\/config\/missing\.json/,
  );
  assertProblem(
    problems(minimalMapping([{ target: "GATEWAY_CONFIG", value: "/etc/gateway.json" }])),
    /^GATEWAY_CONFIG: must be a path inside the deployed tree/,
  );
  assertProblem(
    problems(minimalMapping([{ target: "JWKS_FILE", value: "infra/deploy/no-such-jwks.json" }])),
    /^JWKS_FILE: infra\/deploy\/no-such-jwks\.json is not in the deployed tree/,
  );
});

Deno.test("plan: the shipped example mapping is deployable once its secrets are set", async () => {
  const mapping = JSON.parse(
    await Deno.readTextFile(new URL("infra/deploy/deploy.env.example.json", ROOT)),
  );
  const env: Record<string, string> = {};
  for (const v of mapping.vars) {
    if (v.value?.startsWith("env:")) env[v.value.slice(4)] = `${v.value.slice(4)}-0123456789abcdef`;
  }
  const p = buildPlan({ mapping, env, readFile: readRepoFile, promote: true });
  const secrets = p.vars.filter((v) => v.secret).map((v) => v.name);
  assert.deepEqual(secrets, [
    "METERING_SECRET",
    "JWT_SECRET",
    "BYOK_MASTER_KEYS",
    "REDIS_REST_TOKEN",
    "OPENAI_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "ACME_OPENAI_KEY",
  ]);
  // Every variable is documented in the file.
  for (const v of mapping.vars) assert.ok(v.note, `${v.target} has a note`);
});

Deno.test("plan: the rendered plan shows every command and name, and no secret value", () => {
  const p = plan({ promote: true });
  const text = renderPlan(p, { dryRun: true, tokenSet: false });
  for (const secret of Object.values(SECRETS)) assert.ok(!text.includes(secret), "secret leaked");
  assert.match(text, /dry run: nothing runs, no network/);
  assert.match(text, /org: {8}convergio/);
  assert.match(text, /entrypoint: src\/main\.ts/);
  assert.match(text, /ROLE=edge/);
  assert.match(text, /DENO_DEPLOY_TOKEN is not set/);
  assert.match(text, /METERING_SECRET +\[redacted\] +\(secret, env:CVG_METERING_SECRET\)/);
  assert.match(text, /AGGREGATOR_URL +https:\/\/aggregator\.example\.com +\(literal\)/);
  for (const step of p.steps) {
    if ("argv" in step) assert.ok(text.includes(commandLine(step.argv)), commandLine(step.argv));
  }
  assert.match(text, /GET <production URL>\/healthz/);
  const real = renderPlan(plan(), { dryRun: false, tokenSet: true });
  assert.ok(!real.includes("dry run"));
  assert.match(real, /DENO_DEPLOY_TOKEN is set/);
  assert.match(real, /production: not touched \(pass --promote\)/);
  const created = renderPlan(plan({ create: true }), { dryRun: true, tokenSet: true });
  assert.match(created, /--install-command 'deno install' --build-command '' /);
});

Deno.test("plan: redaction and the .env text", () => {
  const p = plan();
  const leak = `token=${SECRETS.CVG_REDIS_REST_TOKEN}; again ${SECRETS.CVG_REDIS_REST_TOKEN}`;
  assert.equal(redact(leak, p.vars), `token=${REDACTED}; again ${REDACTED}`);
  assert.equal(redact("https://aggregator.example.com", p.vars), "https://aggregator.example.com");
  const env = envFileText(p);
  assert.ok(env.includes(`METERING_SECRET='${SECRETS.CVG_METERING_SECRET}'\n`));
  assert.ok(env.startsWith("ROLE='edge'\nBUDGET_STORE='redis'\n"));
  // A console-set secret stays out of the file (env load --replace would overwrite it).
  assert.ok(!env.includes("BYOK_MASTER_KEYS"));
  assert.equal(env.split("\n").length, p.vars.length);

  assert.equal(dotenvQuote("plain $HOME"), "'plain $HOME'");
  assert.equal(dotenvQuote("it's"), `"it's"`);
  assert.equal(dotenvQuote(`it's "x"`), undefined);
  assert.equal(dotenvQuote("it's \\n"), undefined);
  assert.equal(dotenvQuote("two\nlines"), undefined);
  assert.equal(commandLine(["deploy", "a b", "", "it's"]), `deno deploy 'a b' '' 'it'\\''s'`);
});

Deno.test("plan: every ENV_FIELDS variable of src/config.ts has an edge rule", async () => {
  const source = await Deno.readTextFile(new URL("src/config.ts", ROOT));
  const start = source.indexOf("const ENV_FIELDS");
  const block = start < 0 ? undefined : source.slice(start, source.indexOf("\n];", start));
  assert.ok(block, "ENV_FIELDS not found in src/config.ts");
  const names = [...block.matchAll(/^\s*\["([A-Z_]+)",/gm)].map((m) => m[1]);
  assert.ok(names.length >= 20, `only ${names.length} names parsed`);
  const unclassified = names.filter((n) => !(n in EDGE_VARS));
  assert.deepEqual(unclassified, [], "classify them in EDGE_VARS (src/deploy/plan.ts)");
  assert.ok("GATEWAY_CONFIG" in EDGE_VARS);
});
