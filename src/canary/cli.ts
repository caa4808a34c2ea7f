/**
 * `deno task canary`: options → a rollout plan, a traffic switch and the
 * signal sources; scripts/canary.ts only wires the real process to `main`.
 */
import { parseArgs } from "node:util";
import { FlagSwitch, parseFlagValue } from "./flag.ts";
import { type Files, NginxSwitch, type RunCommand } from "./nginx.ts";
import {
  checkSteps,
  describePlan,
  describeResult,
  EXIT_CODES,
  type RolloutPlan,
  runRollout,
  type Timer,
  type TrafficSwitch,
  type Watched,
} from "./rollout.ts";
import { SPEC_RULES } from "./signals.ts";
import { combine, type FetchLike, metricsSource, sloSource, type Source } from "./sources.ts";
import { checkUpstream, DEFAULT_UPSTREAM, renderUpstream, type UpstreamSpec } from "./upstream.ts";

export const TOKEN_ENV = "CONVERGIO_ADMIN_TOKEN";

export const USAGE = `usage:
  deno task canary version --stable HOST:PORT --canary HOST:PORT --upstream-file FILE [options]
  deno task canary flag <name> <value> --gateway URL [options]

gateway version canary (self-hosted, nginx weights):
  --stable HOST:PORT        the running version, as nginx reaches it
  --canary HOST:PORT        the new version
  --stable-url URL          where its signals are read (default http://<stable>)
  --canary-url URL          same for the canary (default http://<canary>)
  --upstream-file FILE      the upstream file nginx.conf includes (infra/selfhost/nginx-upstream.conf)
  --nginx-conf FILE         validate each file with \`nginx -t -c FILE\`, reload with \`-c FILE\`
  --nginx-bin PATH          default nginx
  --reload-cmd "CMD ARGS"   reload with this instead of \`nginx -s reload\` (no shell)
  --upstream-name NAME      default ${DEFAULT_UPSTREAM.name}
  --server-params TEXT      on each server line (default "${DEFAULT_UPSTREAM.serverParams}")
  --keepalive N             idle upstream connections (default ${DEFAULT_UPSTREAM.keepalive}, 0: none)

policy canary (feature flag, tenants in the canary buckets):
  <name> <value>            e.g. routing_policy cheapest; JSON for lists: '["net.http"]'
  --gateway URL             the admin API: the aggregator, or an edge
  --watch URL               a gateway whose signals decide (repeatable, summed; default --gateway)
  --reason TEXT             audited with every flag call

common:
  --steps P,P,...           canary percentages (default 5,25,50,100), then promote
  --step-seconds N          each step at least this long (default 600)
  --poll-seconds N          signal polling (default 10)
  --hold-seconds N          extra wait for enough canary requests (default: the longest window)
  --error-window-seconds N  RB-1 window (default 300)     --error-threshold R  (default 0.02)
  --latency-window-seconds N  RB-2 window (default 600)   --latency-quantile Q (default 0.95)
  --latency-slo-ms N        RB-2 SLO with --source metrics (default 800; /admin/slo has its own)
  --min-requests N          events a window needs to judge (default 20)
  --max-poll-failures N     unreadable canary samples in a row that roll back (default 3)
  --source slo|metrics      GET /admin/slo (admin token) or GET /metrics (default slo)
  --admin-token TOKEN       admin JWT (better: env ${TOKEN_ENV}; \`deno task token --role admin\`)
  --dry-run                 print the plan; no network, no file written

exit: 0 promoted, 1 rolled back, 2 bad input or preflight failed (nothing changed),
      3 manual action needed (a rollback or promotion failed)`;

export interface Io {
  out(line: string): void;
  err(line: string): void;
}

export interface CliDeps {
  fetch: FetchLike;
  timer: Timer;
  run: RunCommand;
  files: Files;
  io: Io;
  signal?: AbortSignal;
}

class UsageError extends Error {}

const OPTIONS = {
  stable: { type: "string" },
  canary: { type: "string" },
  "stable-url": { type: "string" },
  "canary-url": { type: "string" },
  "upstream-file": { type: "string" },
  "upstream-name": { type: "string" },
  "server-params": { type: "string" },
  keepalive: { type: "string" },
  "nginx-conf": { type: "string" },
  "nginx-bin": { type: "string" },
  "reload-cmd": { type: "string" },
  gateway: { type: "string" },
  watch: { type: "string", multiple: true },
  reason: { type: "string" },
  steps: { type: "string" },
  "step-seconds": { type: "string" },
  "poll-seconds": { type: "string" },
  "hold-seconds": { type: "string" },
  "error-window-seconds": { type: "string" },
  "error-threshold": { type: "string" },
  "latency-window-seconds": { type: "string" },
  "latency-quantile": { type: "string" },
  "latency-slo-ms": { type: "string" },
  "min-requests": { type: "string" },
  "max-poll-failures": { type: "string" },
  source: { type: "string" },
  "admin-token": { type: "string" },
  "dry-run": { type: "boolean", default: false },
  help: { type: "boolean", short: "h", default: false },
} as const;

type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>[
  "values"
];

function number(
  values: Values,
  name: keyof Values,
  fallback: number,
  check: (n: number) => boolean,
  what: string,
): number {
  const raw = values[name];
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (typeof raw !== "string" || raw.trim() === "" || !Number.isFinite(n) || !check(n)) {
    throw new UsageError(`--${name} must be ${what}, not "${raw}"`);
  }
  return n;
}

const positive = (n: number) => n > 0;
const wholeAtLeast = (min: number) => (n: number) => Number.isInteger(n) && n >= min;
const fraction = (n: number) => n > 0 && n < 1;

export function buildPlan(values: Values): RolloutPlan {
  const steps = (values.steps ?? "5,25,50,100").split(",").map((s) => Number(s.trim()));
  const problems = checkSteps(steps);
  if (problems.length) throw new UsageError(`--steps: ${problems.join("; ")}`);
  const sec = (name: keyof Values, fallback: number) =>
    number(values, name, fallback, positive, "a number of seconds > 0") * 1000;
  const errorsWindow = sec("error-window-seconds", SPEC_RULES.errors.windowMs / 1000);
  const latencyWindow = sec("latency-window-seconds", SPEC_RULES.latency.windowMs / 1000);
  return {
    steps,
    stepMs: sec("step-seconds", 600),
    pollMs: sec("poll-seconds", 10),
    holdMs: sec("hold-seconds", Math.max(errorsWindow, latencyWindow) / 1000),
    rules: {
      errors: {
        windowMs: errorsWindow,
        threshold: number(
          values,
          "error-threshold",
          SPEC_RULES.errors.threshold,
          fraction,
          "a ratio between 0 and 1",
        ),
      },
      latency: {
        windowMs: latencyWindow,
        quantile: number(
          values,
          "latency-quantile",
          SPEC_RULES.latency.quantile,
          fraction,
          "a ratio between 0 and 1",
        ),
      },
      minRequests: number(
        values,
        "min-requests",
        SPEC_RULES.minRequests,
        wholeAtLeast(1),
        "a whole number ≥ 1",
      ),
    },
    maxPollFailures: number(values, "max-poll-failures", 3, wholeAtLeast(1), "a whole number ≥ 1"),
  };
}

function url(name: string, value: string): string {
  try {
    const u = new URL(value);
    if (u.protocol === "http:" || u.protocol === "https:") return value.replace(/\/$/, "");
  } catch { /* reported below */ }
  throw new UsageError(`${name} must be an http(s) URL, not "${value}"`);
}

interface Built {
  traffic: TrafficSwitch;
  canary: Watched;
  stable?: Watched;
  title: string;
  /** Printed after the plan on a dry run. */
  preview: string[];
}

function sourceFor(values: Values, base: string, token: string | undefined, deps: CliDeps): Source {
  const kind = values.source ?? "slo";
  if (kind === "metrics") {
    const slo = number(values, "latency-slo-ms", 800, positive, "milliseconds > 0");
    return metricsSource(base, slo, deps.fetch);
  }
  if (kind !== "slo") throw new UsageError(`--source must be slo or metrics, not "${kind}"`);
  return sloSource(base, token ?? "", deps.fetch);
}

function buildVersion(
  values: Values,
  token: string | undefined,
  deps: CliDeps,
  firstStep: number,
): Built {
  const missing = ["stable", "canary", "upstream-file"].filter((k) => !values[k as keyof Values]);
  if (missing.length) {
    throw new UsageError(`version needs ${missing.map((m) => `--${m}`).join(", ")}`);
  }
  const spec: UpstreamSpec = {
    name: values["upstream-name"] ?? DEFAULT_UPSTREAM.name,
    stable: values.stable!,
    canary: values.canary!,
    serverParams: values["server-params"] ?? DEFAULT_UPSTREAM.serverParams,
    keepalive: number(
      values,
      "keepalive",
      DEFAULT_UPSTREAM.keepalive,
      wholeAtLeast(0),
      "a whole number ≥ 0",
    ),
  };
  const problems = checkUpstream(spec);
  if (problems.length) throw new UsageError(problems.join("; "));
  const reload = values["reload-cmd"]?.trim().split(/\s+/);
  const traffic = new NginxSwitch(
    {
      upstream: spec,
      file: values["upstream-file"]!,
      conf: values["nginx-conf"],
      bin: values["nginx-bin"] ?? "nginx",
      reloadCmd: reload?.length && reload[0] ? reload : undefined,
    },
    deps.run,
    deps.files,
  );
  const stableUrl = url("--stable-url", values["stable-url"] ?? `http://${spec.stable}`);
  const canaryUrl = url("--canary-url", values["canary-url"] ?? `http://${spec.canary}`);
  return {
    traffic,
    canary: { label: "canary", source: sourceFor(values, canaryUrl, token, deps) },
    stable: { label: "stable", source: sourceFor(values, stableUrl, token, deps) },
    title:
      `gateway version canary: stable ${spec.stable} (${stableUrl}) → canary ${spec.canary} (${canaryUrl})`,
    preview: [
      `${values["upstream-file"]} at the first step:`,
      ...renderUpstream(spec, firstStep, `step ${firstStep}%`).trimEnd().split("\n")
        .map((l) => `  ${l}`),
    ],
  };
}

function buildFlag(
  positionals: string[],
  values: Values,
  token: string | undefined,
  deps: CliDeps,
): Built {
  const [name, rawValue] = positionals;
  if (!name || rawValue === undefined || positionals.length > 2) {
    throw new UsageError("flag needs exactly <name> <value>");
  }
  if (!values.gateway) throw new UsageError("flag needs --gateway URL");
  const gateway = url("--gateway", values.gateway);
  const watch = (values.watch ?? [gateway]).map((w) => url("--watch", w));
  const value = parseFlagValue(rawValue);
  const traffic = new FlagSwitch(
    {
      gateway,
      token: token ?? "",
      name,
      value,
      reason: values.reason ??
        `canary rollout of ${name}=${JSON.stringify(value)} by scripts/canary.ts`,
    },
    deps.fetch,
  );
  return {
    traffic,
    canary: {
      label: watch.length === 1
        ? "gateway (all tenants)"
        : `${watch.length} gateways (all tenants)`,
      source: combine(watch.map((w) => sourceFor(values, w, token, deps))),
    },
    title: `policy canary: flag ${name} → ${JSON.stringify(value)}`,
    preview: [
      `note: /admin/slo and /metrics are not split by tenant, so the canary's tenants are judged`,
      `  through the global signals: a fault limited to them breaches RB-1 only once their`,
      `  failures reach 2% of all requests.`,
    ],
  };
}

export async function main(args: string[], env: Record<string, string | undefined>, deps: CliDeps) {
  const { io } = deps;
  let built: Built;
  let plan: RolloutPlan;
  let dryRun: boolean;
  try {
    let parsed;
    try {
      parsed = parseArgs({ args, options: OPTIONS, allowPositionals: true, strict: true });
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    const { values, positionals } = parsed;
    if (values.help) {
      io.out(USAGE);
      return 0;
    }
    dryRun = values["dry-run"];
    plan = buildPlan(values);
    const token = values["admin-token"] ?? env[TOKEN_ENV];
    const [kind, ...rest] = positionals;
    if (kind === "version") {
      if (rest.length) {
        throw new UsageError(`version takes no positional arguments: ${rest.join(" ")}`);
      }
      built = buildVersion(values, token, deps, plan.steps[0]);
    } else if (kind === "flag") built = buildFlag(rest, values, token, deps);
    else {throw new UsageError(
        kind ? `unknown canary kind "${kind}"` : "name a kind: version or flag",
      );}
    const needsToken = kind === "flag" || (values.source ?? "slo") === "slo";
    if (!dryRun && needsToken && !token) {
      throw new UsageError(`an admin token is needed: --admin-token or env ${TOKEN_ENV}`);
    }
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.err(`canary: ${err.message}\n\n${USAGE}`);
    return EXIT_CODES.not_started;
  }

  io.out(`${built.title}${dryRun ? " (dry run: no network, nothing written)" : ""}`);
  for (const line of describePlan(plan, built)) io.out(line);
  if (dryRun) {
    for (const line of built.preview) io.out(line);
    return 0;
  }
  const result = await runRollout(plan, {
    traffic: built.traffic,
    canary: built.canary,
    stable: built.stable,
    timer: deps.timer,
    log: io.out,
    signal: deps.signal,
  });
  const labels = { canary: built.canary.label, stable: built.stable?.label };
  for (const line of describeResult(result, labels)) io.out(line);
  if (result.exitCode !== 0) {
    io.err(`canary: ${result.outcome.replace(/_/g, " ")}: ${result.reason}`);
  }
  return result.exitCode;
}
