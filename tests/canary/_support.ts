/**
 * Real pieces for the canary end-to-end tests: gateway processes (role all,
 * each on a fresh Postgres database), a real nginx on a temp config, a small
 * load loop, admin tokens from `deno task token`, and scripts/canary.ts run
 * as a subprocess.
 */
import { run as mintToken } from "../../scripts/token.ts";
import { freshPostgres } from "../support/db.ts";
import { freePort, type GatewayProcess, spawnGateway } from "../support/aggregator_process.ts";

export const ROOT = decodeURIComponent(new URL("../../", import.meta.url).pathname);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function nginxBinary(): Promise<string> {
  for (const candidate of ["nginx", "/usr/sbin/nginx"]) {
    try {
      await new Deno.Command(candidate, { args: ["-v"], stdout: "null", stderr: "null" }).output();
      return candidate;
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
  throw new Error("nginx is not installed: apt-get install -y nginx (.ci/run installs it)");
}

/** Polls `check` every 100 ms until it holds; throws with `what` after `ms`. */
export async function waitFor(
  what: string,
  check: () => Promise<boolean> | boolean,
  ms = 15_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** A gateway config for the e2e tests: the demo provider, limits out of the way. */
export function gatewayConfig(raw: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    providers: { demo: { protocol: "mock" } },
    models: {
      "convergio-demo": {
        deployments: [{ provider: "demo", model: "demo-large" }],
        price: { input_per_1m: 2, output_per_1m: 8 },
      },
    },
    routing: { backoff_ms: 0 },
    tenant_defaults: { rpm: 1_000_000, tpm: 100_000_000, daily_budget_usd: 1000 },
    observability: { log_level: "warn" },
    ...raw,
  };
}

export interface Gateway {
  url: string;
  /** `127.0.0.1:<port>`, as nginx reaches it. */
  hostPort: string;
  proc: GatewayProcess;
  stop(): Promise<void>;
}

/** A real `src/main.ts` process, role all, its ledger on a fresh Postgres database. */
export async function startGateway(
  raw: Record<string, unknown>,
  jwtSecret: string,
): Promise<Gateway> {
  const dir = await Deno.makeTempDir({ prefix: "cvg-canary-" });
  const pg = await freshPostgres();
  await Deno.writeTextFile(`${dir}/gateway.json`, JSON.stringify(raw));
  let proc: GatewayProcess;
  try {
    proc = await spawnGateway({
      PORT: "0",
      GATEWAY_CONFIG: `${dir}/gateway.json`,
      DATA_DIR: `${dir}/data`,
      DATABASE_URL: pg.url,
      JWT_SECRET: jwtSecret,
      METERING_SPOOL_FILE: "false",
    });
  } catch (err) {
    await pg.drop();
    await Deno.remove(dir, { recursive: true });
    throw err;
  }
  return {
    url: proc.url,
    hostPort: new URL(proc.url).host,
    proc,
    async stop() {
      await proc.stop();
      await pg.drop();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

export interface Nginx {
  base: string;
  dir: string;
  conf: string;
  upstreamFile: string;
  bin: string;
  /** Writes the upstream file and reloads (what the test itself sets up between scenarios). */
  setUpstream(text: string): Promise<void>;
  errorLog(): Promise<string>;
  stop(): Promise<void>;
}

/**
 * A real nginx in the foreground (`daemon off`), everything it writes in a
 * temp folder, proxying `/` to the `convergio_gateway` upstream that
 * `upstream.conf` beside its config defines.
 */
export async function startNginx(upstream: string): Promise<Nginx> {
  const bin = await nginxBinary();
  const dir = await Deno.makeTempDir({ prefix: "cvg-canary-nginx-" });
  const port = freePort();
  const conf = `${dir}/nginx.conf`;
  const upstreamFile = `${dir}/upstream.conf`;
  const temps = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
    .map((t) => `    ${t}_temp_path ${dir}/${t};`).join("\n");
  await Deno.writeTextFile(
    conf,
    `${Deno.uid() === 0 ? "user root;\n" : ""}worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
${temps}
    access_log off;
    include upstream.conf;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    server {
        listen 127.0.0.1:${port};
        location / { proxy_pass http://convergio_gateway; }
    }
}
`,
  );
  await Deno.writeTextFile(upstreamFile, upstream);
  const child = new Deno.Command(bin, {
    args: ["-c", conf, "-e", `${dir}/error.log`, "-g", "daemon off;"],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const stop = async () => {
    try {
      child.kill("SIGQUIT");
    } catch { /* already exited */ }
    await child.status;
    await stderr;
    await Deno.remove(dir, { recursive: true });
  };
  try {
    await waitFor("nginx to listen", async () => {
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port })).close();
        return true;
      } catch {
        return false;
      }
    });
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    base: `http://127.0.0.1:${port}`,
    dir,
    conf,
    upstreamFile,
    bin,
    async setUpstream(text) {
      await Deno.writeTextFile(upstreamFile, text);
      const out = await new Deno.Command(bin, { args: ["-s", "reload", "-c", conf] }).output();
      if (out.code !== 0) throw new Error(new TextDecoder().decode(out.stderr));
    },
    errorLog: () => Deno.readTextFile(`${dir}/error.log`).catch(() => ""),
    stop,
  };
}

/** A token the gateways accept (same JWT_SECRET), minted as `deno task token` does. */
export function token(jwtSecret: string, tenant: string, admin = false): Promise<string> {
  return mintToken(
    [
      "--tenant",
      tenant,
      "--user",
      admin ? "canary-operator" : "load",
      ...(admin ? ["--role", "admin"] : []),
    ],
    { JWT_SECRET: jwtSecret },
  );
}

/**
 * No pooled connections: each request opens its own, as many independent
 * clients do, so a request never races nginx closing an idle connection
 * while its old workers drain after a reload.
 */
const freshConnections = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });

/** One non-streamed chat: its status (0 when the connection failed). */
export async function chat(base: string, bearer: string): Promise<number> {
  try {
    const res = await fetch(`${base}/v1/chat`, {
      client: freshConnections,
      method: "POST",
      headers: { authorization: `Bearer ${bearer}`, "content-type": "application/json" },
      body: JSON.stringify({ prompt: "hello canary" }),
    });
    await res.body?.cancel();
    return res.status;
  } catch {
    return 0;
  }
}

export interface Load {
  /** Responses by status so far. */
  statuses: Map<number, number>;
  stop(): Promise<void>;
}

/** `workers` loops of chats with a pause between them, round-robin over the tokens. */
export function startLoad(base: string, tokens: string[], workers = 2, pauseMs = 40): Load {
  const statuses = new Map<number, number>();
  let stopped = false;
  let n = 0;
  const loops = Array.from({ length: workers }, async () => {
    while (!stopped) {
      const status = await chat(base, tokens[n++ % tokens.length]);
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
      await sleep(pauseMs);
    }
  });
  return {
    statuses,
    async stop() {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

/** A gateway's counters from `/admin/slo`: API requests and 5xx over the SLO window. */
export async function sloTotals(
  url: string,
  admin: string,
): Promise<{ total: number; bad: number }> {
  const res = await fetch(`${url}/admin/slo`, { headers: { authorization: `Bearer ${admin}` } });
  const body = await res.json();
  const days = body.targets.window_days;
  return body.slos.find((s: { name: string }) => s.name === "availability").windows[`${days}d`];
}

/**
 * scripts/canary.ts as an operator runs it; killed if it outlives
 * `timeoutMs`. With `interrupt`, sends that signal once stdout matches the
 * pattern (the operator pressing Ctrl-C mid-rollout).
 */
export async function canaryCli(
  args: string[],
  env: Record<string, string>,
  opts: { timeoutMs?: number; interrupt?: { when: RegExp; signal: Deno.Signal } } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-run",
      `--allow-env=CONVERGIO_ADMIN_TOKEN`,
      "scripts/canary.ts",
      ...args,
    ],
    cwd: ROOT,
    env: { DENO_COVERAGE_DIR: "coverage", ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 45_000);
  let stdout = "";
  let interrupted = false;
  const stderr = new Response(child.stderr).text();
  try {
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      stdout += chunk;
      if (opts.interrupt && !interrupted && opts.interrupt.when.test(stdout)) {
        interrupted = true;
        child.kill(opts.interrupt.signal);
      }
    }
    const { code } = await child.status;
    return { code, stdout, stderr: await stderr };
  } finally {
    clearTimeout(timer);
  }
}

/** Short windows: judged after 1.5 s of traffic at a few requests per second. */
export const FAST = [
  "--poll-seconds=0.25",
  "--error-window-seconds=1.5",
  "--latency-window-seconds=1.5",
  "--min-requests=5",
  "--hold-seconds=10",
];
