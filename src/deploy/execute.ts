/**
 * Runs a deployment plan. Every effect goes through ExecDeps, so tests drive
 * it with fakes and the CLI with systemDeps(). Whatever it prints is redacted.
 */
import { commandLine, ENV_FILE, envFileText, type Plan, redact, type Timeline } from "./plan.ts";

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ExecDeps {
  /** Runs `deno <argv>` in the repository root. */
  run(argv: string[]): Promise<RunResult>;
  /** Writes text to a new file only its owner can read; returns the path. */
  writePrivateFile(text: string): Promise<string>;
  remove(path: string): Promise<void>;
  fetch(url: string): Promise<Response>;
  sleep(ms: number): Promise<void>;
  log(line: string): void;
}

/** A step failed: the CLI exits 1. */
export class DeployError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DeployError";
  }
}

/** A fresh deployment may take a few seconds to answer on its URL. */
export const HEALTHZ_ATTEMPTS = 10;
export const HEALTHZ_DELAY_MS = 3_000;

/** The URL a `deno deploy --json` publish reports (`timelines[].domains[]`), else the first app URL printed. */
export function deploymentUrl(stdout: string): string | undefined {
  const candidates = [stdout, ...stdout.trim().split("\n").reverse()];
  for (const text of candidates) {
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      continue; // progress output, not the result
    }
    const timelines = Array.isArray(json?.timelines) ? json.timelines : [];
    const domain = timelines.flatMap((t: { domains?: unknown }) =>
      Array.isArray(t?.domains) ? t.domains : []
    ).find((d: unknown) => typeof d === "string");
    if (domain) {
      return (domain.startsWith("https://") ? domain : `https://${domain}`).replace(/\/$/, "");
    }
  }
  return /https:\/\/(?!console\.)[\w.-]+\.deno\.(?:net|dev)\b/.exec(stdout)?.[0];
}

/**
 * Checks `deno deploy env list --json`: every planned variable is there and
 * every secret is stored as one. Returns notes on variables the mapping does
 * not manage (left alone, but worth a look).
 */
export function verifyEnv(stdout: string, plan: Plan): string[] {
  let listed: Array<{ key?: unknown; isSecret?: unknown }>;
  try {
    listed = JSON.parse(stdout);
    if (!Array.isArray(listed)) throw new Error("not an array");
  } catch (err) {
    throw new DeployError(`cannot read \`deno deploy env list --json\`: ${(err as Error).message}`);
  }
  const byKey = new Map(listed.map((e) => [e.key, e]));
  const problems: string[] = [];
  for (const v of plan.vars) {
    const entry = byKey.get(v.name);
    if (!entry) {
      problems.push(
        `${v.name} is missing on Deno Deploy${
          v.console ? ": set it as a secret in the console" : ""
        }`,
      );
    } else if (v.secret && entry.isSecret !== true) {
      problems.push(
        `${v.name} was stored as plain text: rotate it, then set it as a secret in the console`,
      );
    }
  }
  if (problems.length) throw new DeployError(problems.join("\n"));
  const planned = new Set(plan.vars.map((v) => v.name));
  return listed.filter((e) => !planned.has(String(e.key))).map((e) =>
    `note: ${e.key} is set on Deno Deploy but not in the mapping`
  );
}

async function checkHealth(url: string, role: string, deps: ExecDeps): Promise<void> {
  let last = "";
  for (let attempt = 1; attempt <= HEALTHZ_ATTEMPTS; attempt++) {
    try {
      const res = await deps.fetch(`${url}/healthz`);
      const body = await res.text();
      if (res.status === 200) {
        const json = JSON.parse(body);
        if (json.status === "ok" && json.role === role) return;
      }
      last = `${res.status} ${body.slice(0, 200)}`;
    } catch (err) {
      last = (err as Error).message;
    }
    if (attempt < HEALTHZ_ATTEMPTS) await deps.sleep(HEALTHZ_DELAY_MS);
  }
  throw new DeployError(
    `${url}/healthz did not answer 200 {"status":"ok","role":"${role}"} ` +
      `after ${HEALTHZ_ATTEMPTS} attempts; last: ${last}`,
  );
}

/** Runs the plan's steps in order; stops at the first failure. Returns the deployment URLs. */
export async function execute(
  plan: Plan,
  deps: ExecDeps,
): Promise<Partial<Record<Timeline, string>>> {
  const say = (line: string) => deps.log(redact(line, plan.vars));
  const run = async (argv: string[]) => {
    const res = await deps.run(argv);
    const stderr = res.stderr.trim();
    if (res.code !== 0) {
      const output = [stderr, res.stdout.trim()].filter(Boolean).join("\n");
      throw new DeployError(
        redact(`${commandLine(argv)} exited ${res.code}\n${output}`, plan.vars),
      );
    }
    if (stderr) say(stderr.replace(/^/gm, "     "));
    return res.stdout;
  };
  const urls: Partial<Record<Timeline, string>> = {};
  for (const [i, step] of plan.steps.entries()) {
    const n = `[${i + 1}/${plan.steps.length}]`;
    if (step.kind === "healthz") {
      const url = urls[step.timeline]!;
      say(`${n} GET ${url}/healthz`);
      await checkHealth(url, plan.role, deps);
      continue;
    }
    if (step.kind === "env-load") {
      const file = await deps.writePrivateFile(envFileText(plan));
      try {
        const argv = step.argv.map((a) => a === ENV_FILE ? file : a);
        say(`${n} ${commandLine(argv)}`);
        await run(argv);
      } finally {
        await deps.remove(file);
      }
      continue;
    }
    say(`${n} ${commandLine(step.argv)}`);
    const stdout = await run(step.argv);
    if (step.kind === "env-verify") verifyEnv(stdout, plan).forEach(say);
    if (step.kind === "deploy") {
      const url = deploymentUrl(stdout);
      if (!url) {
        throw new DeployError(
          `no ${step.timeline} URL in the output of ${commandLine(step.argv)}; check the console`,
        );
      }
      urls[step.timeline] = url;
      say(`     ${step.timeline}: ${url}`);
    }
  }
  return urls;
}

/** The real effects: the running Deno binary (same version as the CI pin), temp files, fetch. */
export function systemDeps(root: string): ExecDeps {
  return {
    async run(argv) {
      const out = await new Deno.Command(Deno.execPath(), {
        args: argv,
        cwd: root,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder();
      return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
    },
    async writePrivateFile(text) {
      const path = await Deno.makeTempFile({ prefix: "convergio-deploy-", suffix: ".env" });
      // Before any byte is written; makeTempFile already uses 0600, this makes it explicit.
      await Deno.chmod(path, 0o600);
      await Deno.writeTextFile(path, text);
      return path;
    },
    remove: (path) => Deno.remove(path),
    fetch: (url) => fetch(url, { signal: AbortSignal.timeout(10_000) }),
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    log: (line) => console.log(line),
  };
}
