/**
 * Plans a deployment of the edge role to Deno Deploy: validates the env
 * mapping file, resolves every value, and lists the `deno deploy` commands to
 * run. Pure: no process, no network, no file system beyond the injected
 * `readFile`. `execute.ts` runs a plan; `scripts/deploy.ts` is the CLI.
 */
import { z } from "zod";
import { ConfigError, type Env, loadConfig } from "../config.ts";

export const ENTRYPOINT = "src/main.ts";
export const ROLE = "edge";
/** Stands for the temporary .env file in `env load`; the executor writes it. */
export const ENV_FILE = "<env-file>";
export const REDACTED = "[redacted]";
/** Short values would make redaction mangle unrelated output, and are weak secrets anyway. */
export const MIN_SECRET_CHARS = 16;
/** The config check's stand-in for a value set in the console: valid as a URL and as a credential. */
const CONSOLE_PLACEHOLDER = "https://deno-deploy-console.invalid/placeholder";

type Rule =
  | { kind: "pinned"; value: string; why: string }
  | { kind: "required"; secret?: boolean; https?: boolean }
  | { kind: "optional"; secret?: boolean; path?: boolean }
  | { kind: "forbidden"; why: string };

/**
 * How each gateway variable (ENV_FIELDS in src/config.ts, plus GATEWAY_CONFIG)
 * is treated on a Deno Deploy edge. A test fails when ENV_FIELDS gains a name
 * this table does not classify. Other names (provider keys the config file
 * reads through `env:NAME`) are allowed as they are declared.
 */
export const EDGE_VARS: Record<string, Rule> = {
  ROLE: { kind: "pinned", value: ROLE, why: "this task deploys the edge role only" },
  BUDGET_STORE: {
    kind: "pinned",
    value: "redis",
    why: "isolates share no memory, so limits and budgets must live in Redis",
  },
  AGGREGATOR_URL: { kind: "required", https: true },
  METERING_SECRET: { kind: "required", secret: true },
  JWT_SECRET: { kind: "required", secret: true },
  REDIS_REST_URL: { kind: "required", https: true },
  REDIS_REST_TOKEN: { kind: "required", secret: true },
  JWT_ISSUER: { kind: "optional" },
  JWT_AUDIENCE: { kind: "optional" },
  JWKS_URL: { kind: "optional" },
  JWKS_FILE: { kind: "optional", path: true },
  JWKS_ISSUER: { kind: "optional" },
  JWT_ALGORITHMS: { kind: "optional" },
  GATEWAY_CONFIG: { kind: "optional", path: true },
  MAX_BODY_BYTES: { kind: "optional" },
  LOG_LEVEL: { kind: "optional" },
  OBSERVABILITY: { kind: "optional" },
  GLOBAL_DAILY_CAP_USD: { kind: "optional" },
  ALERT_WEBHOOK_URL: { kind: "optional" },
  BYOK_STORE: { kind: "optional" },
  // Required with the local store: see checkByok.
  BYOK_MASTER_KEYS: { kind: "optional", secret: true },
  BYOK_AZURE_VAULT_URL: { kind: "optional" },
  BYOK_AZURE_AUTH: { kind: "optional" },
  BYOK_AZURE_TENANT_ID: { kind: "optional" },
  BYOK_AZURE_CLIENT_ID: { kind: "optional" },
  BYOK_AZURE_CLIENT_SECRET: { kind: "optional", secret: true },
  HOST: { kind: "forbidden", why: "Deno Deploy routes traffic to Deno.serve itself" },
  PORT: { kind: "forbidden", why: "Deno Deploy routes traffic to Deno.serve itself" },
  DATA_DIR: { kind: "forbidden", why: "Deno Deploy has no durable disk; an edge keeps no state" },
  METERING_SPOOL_FILE: {
    kind: "forbidden",
    why: "the spool is memory-only on Deno Deploy (DENO_DEPLOYMENT_ID turns the journal off)",
  },
  DENO_DEPLOYMENT_ID: { kind: "forbidden", why: "Deno Deploy sets it" },
  DATABASE_URL: {
    kind: "forbidden",
    why: "edges never hold the ledger's credentials; only the aggregator talks to Postgres",
  },
};

/**
 * `deno deploy env load` decides by name whether a key not listed in
 * `--non-secrets` is a secret (@deno/deploy, deploy/env.ts). A declared secret
 * must match, or it would be stored as plain text.
 */
const LOADED_AS_SECRET =
  /^(?!.*(?:^|_)(PUBLIC|NEXT_PUBLIC|EXPOSED)(?:_|$)).*(KEY|SECRET|TOKEN|PASSWORD|PRIVATE|CREDENTIALS|AUTH)(?![A-Za-z])/i;

/** Deno Deploy's limits on variables (docs: deploy/reference/env_vars_and_contexts). */
const DENO_PREFIX_ALLOWED = [
  "DENO_AUTH_TOKENS",
  "DENO_COMPAT",
  "DENO_CONDITIONS",
  "DENO_DEPLOY_ENDPOINT",
  "DENO_DEPLOY_TOKEN",
];
const CLOUD_CONNECTION_NAMES = [
  "AWS_ROLE_ARN",
  "AWS_WEB_IDENTITY_TOKEN_FILE",
  "GCP_WORKLOAD_PROVIDER_ID",
  "GCP_SERVICE_ACCOUNT_EMAIL",
  "GCP_PROJECT_ID",
  "AZURE_CLIENT_ID",
  "AZURE_TENANT_ID",
  "AZURE_FEDERATED_TOKEN_FILE",
];
const MAX_KEY_BYTES = 128;
const MAX_VALUE_BYTES = 16_384;
const bytes = (s: string) => new TextEncoder().encode(s).length;

function reservedOnDeploy(name: string): string | undefined {
  if (name.startsWith("DENO_") && !DENO_PREFIX_ALLOWED.includes(name)) {
    return "DENO_ names are reserved";
  }
  if (/^(LD_|OTEL_)/.test(name)) return "LD_ and OTEL_ names are reserved";
  if (CLOUD_CONNECTION_NAMES.includes(name)) return "reserved for Cloud Connections";
  if (bytes(name) > MAX_KEY_BYTES) return `longer than ${MAX_KEY_BYTES} bytes`;
}

const NAME = /^[A-Z][A-Z0-9_]*$/;
const SLUG = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/;

export const MappingSchema = z.strictObject({
  $comment: z.string().optional(),
  org: z.string().regex(SLUG, "must be a Deno Deploy organization slug"),
  app: z.string().regex(SLUG, "must be a Deno Deploy app slug"),
  /** Only used when the app is created (`--create`). */
  region: z.enum(["us", "eu", "global"]).default("global"),
  vars: z.array(z.strictObject({
    /** The Deno Deploy environment variable. */
    target: z.string().regex(NAME, "must be an env var name such as METERING_SECRET"),
    /** A literal, or `env:NAME` to read it from the deploying shell (CI secret store). */
    value: z.string().min(1).optional(),
    secret: z.boolean().default(false),
    /** Set by hand in the Deno Deploy console; the task only checks it is there, as a secret. */
    console: z.boolean().default(false),
    note: z.string().optional(),
  })),
});
export type Mapping = z.infer<typeof MappingSchema>;

export interface PlannedVar {
  name: string;
  secret: boolean;
  value: string;
  /** `pinned`, `literal`, `console` or the `env:NAME` it was read from. */
  origin: string;
  /** Set in the console: not in the .env file; its value here is a placeholder. */
  console?: boolean;
}

export type Timeline = "preview" | "production";
export type Step =
  | { kind: "create"; argv: string[] }
  | { kind: "env-load"; argv: string[] }
  | { kind: "env-verify"; argv: string[] }
  | { kind: "deploy"; timeline: Timeline; argv: string[] }
  | { kind: "healthz"; timeline: Timeline };

export interface Plan {
  org: string;
  app: string;
  region: string;
  entrypoint: string;
  role: string;
  promote: boolean;
  vars: PlannedVar[];
  steps: Step[];
}

/** Bad input: every problem found, one line each. */
export class PlanError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join("\n"));
    this.name = "PlanError";
  }
}

export interface PlanInput {
  /** The parsed JSON of the mapping file. */
  mapping: unknown;
  /** Where `env:NAME` values are read from. */
  env: Env;
  /** Reads a file of the deployed tree, relative to the repository root. */
  readFile: (path: string) => string;
  promote?: boolean;
  /** First deployment: create the app with its entrypoint. */
  create?: boolean;
}

/**
 * How a value is written to the .env file `env load` reads (@std/dotenv):
 * single quotes are literal; double quotes expand only \n, \r and \t. A value
 * neither can carry is refused rather than mangled.
 */
export function dotenvQuote(value: string): string | undefined {
  if (/[\r\n]/.test(value)) return undefined;
  if (!value.includes("'")) return `'${value}'`;
  if (!value.includes('"') && !/\\[nrt]/.test(value)) return `"${value}"`;
  return undefined;
}

function ruleOf(name: string): Rule {
  return EDGE_VARS[name] ?? { kind: "optional" };
}

function checkVar(
  v: Mapping["vars"][number],
  env: Env,
  problems: string[],
): PlannedVar | undefined {
  const rule = ruleOf(v.target);
  const at = v.target;
  if (rule.kind === "forbidden") {
    problems.push(`${at}: not allowed on a Deno Deploy edge: ${rule.why}`);
    return;
  }
  if (rule.kind === "pinned" && v.value !== rule.value) {
    problems.push(`${at}: must be ${rule.value} (${rule.why}), not ${v.value}`);
    return;
  }
  const mustBeSecret = rule.kind !== "pinned" && rule.secret;
  if (mustBeSecret && !v.secret) problems.push(`${at}: is a credential; declare it "secret": true`);
  const reserved = reservedOnDeploy(at);
  if (reserved) {
    problems.push(`${at}: not allowed by Deno Deploy: ${reserved}`);
    return;
  }
  if (v.console) {
    if (!v.secret || v.value !== undefined) {
      problems.push(
        `${at}: "console": true is for secrets set by hand: "secret": true and no value`,
      );
      return;
    }
    return { name: at, secret: true, value: CONSOLE_PLACEHOLDER, origin: "console", console: true };
  }
  if (v.value === undefined) {
    problems.push(`${at}: needs a value (or "console": true for a secret set by hand)`);
    return;
  }
  const fromEnv = v.value.startsWith("env:") ? v.value.slice(4) : undefined;
  if (v.secret && fromEnv === undefined) {
    problems.push(
      `${at}: a secret's value must be env:NAME, read from the deploying shell; never write it in the file`,
    );
    return;
  }
  if (v.secret && !LOADED_AS_SECRET.test(at)) {
    problems.push(
      `${at}: \`deno deploy env load\` keeps only names with KEY, SECRET, TOKEN, PASSWORD, PRIVATE, ` +
        `CREDENTIALS or AUTH as secrets and would store this one as plain text; ` +
        `set it in the console and declare it "console": true`,
    );
  }
  let value = v.value;
  if (fromEnv !== undefined) {
    const found = env[fromEnv];
    if (!NAME.test(fromEnv)) {
      problems.push(`${at}: env:${fromEnv} is not an env var name`);
      return;
    }
    if (found === undefined || found === "") {
      problems.push(`${at}: env:${fromEnv} is not set in the deploying environment`);
      return;
    }
    value = found;
  }
  if (v.secret && value.length < MIN_SECRET_CHARS) {
    problems.push(`${at}: too short for a secret (at least ${MIN_SECRET_CHARS} characters)`);
  }
  if (bytes(value) > MAX_VALUE_BYTES) {
    problems.push(`${at}: longer than Deno Deploy's ${MAX_VALUE_BYTES} bytes`);
  }
  if (dotenvQuote(value) === undefined) {
    problems.push(
      `${at}: the value has a line break, or both ' and " quotes, which a .env file cannot carry`,
    );
  }
  if (rule.kind === "required" && rule.https && !value.startsWith("https://")) {
    problems.push(`${at}: must be an https:// URL (edges reach it over the internet)`);
  }
  if (rule.kind === "optional" && rule.path && (value.startsWith("/") || value.includes(".."))) {
    problems.push(
      `${at}: must be a path inside the deployed tree, relative to the repository root`,
    );
  }
  return { name: at, secret: v.secret, value, origin: fromEnv ? `env:${fromEnv}` : "literal" };
}

/**
 * BYOK on an edge: tenant keys sealed by the aggregator open only with its
 * master keys, and Deno Deploy has neither a disk to generate them on nor a
 * managed identity for Azure Key Vault.
 */
function checkByok(vars: PlannedVar[]): string[] {
  const value = (name: string) => vars.find((v) => v.name === name)?.value;
  const store = value("BYOK_STORE") ?? "local";
  if (store === "local" && !value("BYOK_MASTER_KEYS")) {
    return [
      "BYOK_MASTER_KEYS: required for role edge with the local BYOK store (the aggregator's master keys)",
    ];
  }
  if (store === "azure_key_vault" && value("BYOK_AZURE_AUTH") !== "client_credentials") {
    return ["BYOK_AZURE_AUTH: must be client_credentials: Deno Deploy has no managed identity"];
  }
  return [];
}

/** Runs the gateway's own config validation over the edge's final environment. */
function checkGatewayConfig(vars: PlannedVar[], readFile: PlanInput["readFile"]): string[] {
  const env: Env = Object.fromEntries(vars.map((v) => [v.name, v.value]));
  // As on Deno Deploy, where this variable switches the spool journal off.
  env.DENO_DEPLOYMENT_ID = "plan";
  const problems: string[] = [];
  if (env.JWKS_FILE) {
    try {
      readFile(env.JWKS_FILE);
    } catch {
      problems.push(`JWKS_FILE: ${env.JWKS_FILE} is not in the deployed tree`);
    }
  }
  try {
    loadConfig(env, readFile);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    problems.push(
      ...err.message.replace(/^config error: /, "").split("; ").map((m) => `gateway config: ${m}`),
    );
  }
  return problems;
}

function stepsFor(m: Mapping, vars: PlannedVar[], input: PlanInput): Step[] {
  const scope = ["--org", m.org, "--app", m.app];
  const steps: Step[] = [];
  if (input.create) {
    // Build config is set once, at creation; later deploys reuse it.
    steps.push({
      kind: "create",
      argv: [
        "deploy",
        "create",
        ...scope,
        "--source",
        "local",
        "--app-directory",
        ".",
        "--runtime-mode",
        "dynamic",
        "--entrypoint",
        ENTRYPOINT,
        "--install-command",
        "deno install",
        "--build-command",
        "",
        "--pre-deploy-command",
        "",
        "--build-timeout",
        "5",
        "--build-memory-limit",
        "1024",
        "--region",
        m.region,
        "--non-interactive",
        "--json",
      ],
    });
  }
  const plain = vars.filter((v) => !v.secret).map((v) => v.name);
  // Console-set secrets stay out of the file: --replace would overwrite them.
  steps.push({
    kind: "env-load",
    argv: [
      "deploy",
      "env",
      "load",
      ...scope,
      "--non-interactive",
      "--replace",
      ENV_FILE,
      ...(plain.length ? ["--non-secrets", ...plain] : []),
    ],
  });
  steps.push({
    kind: "env-verify",
    argv: ["deploy", "env", "list", ...scope, "--json", "--non-interactive"],
  });
  steps.push({
    kind: "deploy",
    timeline: "preview",
    argv: ["deploy", ...scope, "--non-interactive", "--json", "."],
  });
  steps.push({ kind: "healthz", timeline: "preview" });
  if (input.promote || input.create) {
    steps.push({
      kind: "deploy",
      timeline: "production",
      argv: ["deploy", ...scope, "--non-interactive", "--json", "--prod", "."],
    });
    steps.push({ kind: "healthz", timeline: "production" });
  }
  return steps;
}

/** Validates the mapping and builds the plan; throws PlanError listing every problem. */
export function buildPlan(input: PlanInput): Plan {
  const parsed = MappingSchema.safeParse(input.mapping);
  if (!parsed.success) {
    throw new PlanError(
      parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`),
    );
  }
  const m = parsed.data;
  const problems: string[] = [];
  const vars: PlannedVar[] = [];
  const seen = new Set<string>();
  for (const v of m.vars) {
    if (seen.has(v.target)) {
      problems.push(`${v.target}: declared twice`);
      continue;
    }
    seen.add(v.target);
    const planned = checkVar(v, input.env, problems);
    if (planned) vars.push(planned);
  }
  const pinned: PlannedVar[] = [];
  for (const [name, rule] of Object.entries(EDGE_VARS)) {
    if (seen.has(name)) continue;
    if (rule.kind === "pinned") {
      pinned.push({ name, secret: false, value: rule.value, origin: "pinned" });
    } else if (rule.kind === "required") {
      problems.push(`${name}: required for role edge but missing from the mapping`);
    }
  }
  vars.unshift(...pinned);
  if (!problems.length) problems.push(...checkByok(vars));
  if (!problems.length) problems.push(...checkGatewayConfig(vars, input.readFile));
  if (problems.length) throw new PlanError(problems.map((p) => redact(p, vars)));
  return {
    org: m.org,
    app: m.app,
    region: m.region,
    entrypoint: ENTRYPOINT,
    role: ROLE,
    // Creating a local-source app publishes a production revision before any
    // variable exists; promoting right after replaces it with a configured one.
    promote: Boolean(input.promote || input.create),
    vars,
    steps: stepsFor(m, vars, input),
  };
}

/** Replaces every secret value in text; whatever a step prints goes through here. */
export function redact(text: string, vars: PlannedVar[]): string {
  let out = text;
  for (const v of vars) {
    // Shorter ones are refused by buildPlan, and replacing them would mangle the text.
    if (v.secret && !v.console && v.value.length >= MIN_SECRET_CHARS) {
      out = out.replaceAll(v.value, REDACTED);
    }
  }
  return out;
}

/** The .env text `deno deploy env load` reads: secrets included, so it only ever goes to a 0600 file. */
export function envFileText(plan: Plan): string {
  return plan.vars.filter((v) => !v.console).map((v) => `${v.name}=${dotenvQuote(v.value)}\n`)
    .join("");
}

function shellQuote(arg: string): string {
  return /^[\w@%+=:,./<>-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`;
}

export function commandLine(argv: string[]): string {
  return ["deno", ...argv].map(shellQuote).join(" ");
}

function describe(step: Exclude<Step, { kind: "healthz" }>): string {
  switch (step.kind) {
    case "create":
      return `create the app (dynamic, entrypoint ${ENTRYPOINT}); once, before the first deploy`;
    case "env-load":
      return "set the variables from a temporary 0600 .env file, removed right after";
    case "env-verify":
      return "check that every variable is there and every secret is stored as a secret";
    case "deploy":
      return `${step.timeline} deployment`;
  }
}

/** The human-readable plan: every command, every variable name, no secret value. */
export function renderPlan(plan: Plan, opts: { dryRun: boolean; tokenSet: boolean }): string {
  const width = Math.max(...plan.vars.map((v) => v.name.length));
  const lines = [
    `Convergio edge → Deno Deploy${opts.dryRun ? " (dry run: nothing runs, no network)" : ""}`,
    `  org:        ${plan.org}`,
    `  app:        ${plan.app}`,
    `  entrypoint: ${plan.entrypoint}`,
    `  role:       ROLE=${plan.role}`,
    `  auth:       ${
      opts.tokenSet ? "DENO_DEPLOY_TOKEN is set" : "DENO_DEPLOY_TOKEN is not set (keychain login)"
    }`,
    `  production: ${
      plan.promote ? "promote after the preview passes /healthz" : "not touched (pass --promote)"
    }`,
    "",
    `Environment (${plan.vars.length} variables, all contexts):`,
    ...plan.vars.map((v) =>
      `  ${v.name.padEnd(width)}  ${
        v.console ? "(set in the console)" : v.secret ? REDACTED : v.value
      }  (${v.secret ? "secret, " : ""}${v.origin})`
    ),
    "",
    "Steps:",
    ...plan.steps.map((s, i) => {
      const n = `  ${i + 1}. `;
      if (s.kind === "healthz") {
        return `${n}GET <${s.timeline} URL>/healthz → 200 {"status":"ok","role":"${plan.role}"}`;
      }
      return `${n}${commandLine(s.argv)}\n     ${describe(s)}`;
    }),
  ];
  return lines.join("\n");
}
