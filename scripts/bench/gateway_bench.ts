/**
 * Side-by-side benchmark, in one run, loopback only, against one OpenAI-wire
 * mock upstream (scripts/bench/mock_upstream.ts, its own process):
 *   direct  straight to the mock;
 *   floor   a bare Deno.serve pass-through proxy (scripts/bench/floor_proxy.ts);
 *   ours    the gateway with everything on: an edge process (JWT, Redis budgets
 *           through an Upstash-REST bridge process, metering to a real aggregator
 *           process on a fresh Postgres database, metrics, info logs, OTLP tracing
 *           with parent-based head sampling of TRACE_SAMPLE_RATIO of the traces);
 *   ours, every trace
 *           a second edge process, the same but OTEL_TRACES_SAMPLER=always_on: what
 *           full tracing costs. Started once ours is measured and stopped after its
 *           own runs (the two edges never run at once); wrk runs only, no streaming.
 *   peer    Portkey AI Gateway (@portkey-ai/gateway 1.15.x), installed with npm
 *           into a temp folder at run time and started with node.
 * Per target: wrk saturation (2 threads, 50 connections, after a warm-up run),
 * a wrk single-connection run (added latency vs direct), sequential SSE
 * streaming (time to first byte and total) and, for ours, the same over /v1/ws.
 * Every process it starts is a process-group leader; all are stopped at the
 * end, on error and on SIGINT/SIGTERM. The report goes to stdout and, in full
 * mode, to docs/benchmarks.md.
 *   deno task bench [--quick] [--peer | --no-peer] [--out FILE]
 *     [--pg postgres://postgres@127.0.0.1:5432/postgres] [--redis redis://127.0.0.1:6379]
 *     [--cpu-prof DIR]
 * --cpu-prof: the edge runs under `deno run --cpu-prof`; its .cpuprofile lands in DIR.
 * --quick: short runs, finishes in under a minute, no peer unless --peer.
 * Mock knobs from the environment: MOCK_CHUNKS (20), MOCK_CHUNK_MS (5), MOCK_LATENCY_MS (0).
 */
import { parseArgs } from "node:util";
import postgres from "postgres";
import { createClient } from "redis";
import { isLoopbackUrl } from "./floor_proxy.ts";
import { measureSse, measureWs, SSE_BODY, type StreamStats } from "./stream_client.ts";
import { benchGatewayConfig, benchToken, CHAT_BODY as BODY, luaScript } from "./support.ts";

const ROOT = decodeURIComponent(new URL("../../", import.meta.url).pathname);
const THREADS = 2;
const CONNS = 50;
/**
 * Share of root traces the "ours" edge records (OTEL_TRACES_SAMPLER=parentbased_traceidratio):
 * an inbound sampled traceparent is always continued. "ours, every trace" records all of them.
 */
const TRACE_SAMPLE_RATIO = 0.1;
const samplePct = Number((TRACE_SAMPLE_RATIO * 100).toPrecision(6));

interface Plan {
  satSeconds: number;
  satWarmup: number;
  latSeconds: number;
  latWarmup: number;
  streamN: number;
  streamWarmup: number;
}
const FULL: Plan = {
  satSeconds: 10,
  satWarmup: 15,
  latSeconds: 5,
  latWarmup: 2,
  streamN: 200,
  streamWarmup: 20,
};
const QUICK: Plan = {
  satSeconds: 2,
  satWarmup: 1,
  latSeconds: 1,
  latWarmup: 1,
  streamN: 20,
  streamWarmup: 3,
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- processes: each one a process-group leader, its output in a log file

interface Proc {
  name: string;
  pid: number;
  log: string;
  exited: boolean;
  status: Promise<Deno.CommandStatus>;
}

function signalGroup(pid: number, signal: Deno.Signal) {
  try {
    Deno.kill(-pid, signal);
  } catch {
    // already gone
  }
}

async function exitsWithin(p: Proc, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const done = await Promise.race([
    p.status.then(() => true),
    new Promise<false>((r) => timer = setTimeout(() => r(false), ms)),
  ]);
  clearTimeout(timer);
  return done;
}

class Processes {
  readonly live: Proc[] = [];
  #closing = false;
  constructor(readonly dir: string) {}

  start(
    name: string,
    cmd: string,
    args: string[],
    opts: { env?: Record<string, string>; cwd?: string } = {},
  ): Proc {
    if (this.#closing) throw new Error(`stopping: ${name} not started`);
    const log = `${this.dir}/${name}.log`;
    const child = new Deno.Command("sh", {
      // sh execs the command with its output redirected: the pid is the command's.
      args: ["-c", 'exec "$@" >>"$0" 2>&1', log, cmd, ...args],
      env: opts.env,
      cwd: opts.cwd ?? ROOT,
      detached: true,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const p: Proc = { name, pid: child.pid, log, exited: false, status: child.status };
    p.status.then(() => p.exited = true);
    this.live.push(p);
    return p;
  }

  /** SIGTERM to the group, SIGKILL after the grace period, then SIGKILL to any member left. */
  async stop(p: Proc, graceMs = 5_000) {
    signalGroup(p.pid, "SIGTERM");
    if (!await exitsWithin(p, graceMs)) {
      signalGroup(p.pid, "SIGKILL");
      await exitsWithin(p, 5_000);
    }
    signalGroup(p.pid, "SIGKILL");
    this.#forget(p);
  }

  async stopAll() {
    this.#closing = true;
    while (this.live.length) await this.stop(this.live[this.live.length - 1]);
  }

  #forget(p: Proc) {
    const i = this.live.indexOf(p);
    if (i >= 0) this.live.splice(i, 1);
  }

  killAllNow() {
    for (const p of this.live) signalGroup(p.pid, "SIGKILL");
  }

  /** Runs a command to its end within timeoutMs; returns its exit code and output. */
  async run(
    name: string,
    cmd: string,
    args: string[],
    timeoutMs: number,
    opts: { env?: Record<string, string>; cwd?: string } = {},
  ): Promise<{ code: number; output: string }> {
    const p = this.start(name, cmd, args, opts);
    if (!await exitsWithin(p, timeoutMs)) {
      await this.stop(p, 1_000);
      throw new Error(`${name} did not finish within ${timeoutMs / 1000} s`);
    }
    this.#forget(p);
    signalGroup(p.pid, "SIGKILL");
    const { code } = await p.status;
    return { code, output: await Deno.readTextFile(p.log).catch(() => "") };
  }
}

const tail = (text: string, lines = 15) => text.trimEnd().split("\n").slice(-lines).join("\n");

async function waitForLog(p: Proc, re: RegExp, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let text = "";
  while (Date.now() < deadline) {
    text = await Deno.readTextFile(p.log).catch(() => "");
    const m = re.exec(text);
    if (m) return m[1];
    if (p.exited) throw new Error(`${p.name} exited before it was ready:\n${tail(text)}`);
    await sleep(50);
  }
  throw new Error(`${p.name} not ready after ${timeoutMs / 1000} s:\n${tail(text)}`);
}

async function waitForPort(p: Proc, port: number, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      if (p.exited) {
        const text = await Deno.readTextFile(p.log).catch(() => "");
        throw new Error(`${p.name} exited before listening:\n${tail(text)}`);
      }
      await sleep(100);
    }
  }
  throw new Error(`${p.name} not listening on ${port} after ${timeoutMs / 1000} s`);
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** /proc/net/tcp addresses are little-endian hex: 127.x.x.x ends in 7F. */
function loopbackHex(addr: string): boolean {
  if (addr.length === 8) return addr.endsWith("7F");
  if (addr === "00000000000000000000000001000000") return true; // ::1
  return addr.startsWith("0000000000000000FFFF0000") && addr.endsWith("7F"); // ::ffff:127.x
}

/** Refuses a listener that is bound to anything but loopback. */
async function assertLoopbackListener(name: string, url: string) {
  const port = Number(new URL(url).port);
  let found = false;
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    const text = await Deno.readTextFile(file).catch(() => "");
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 4 || cols[3] !== "0A") continue; // 0A: LISTEN
      const [addr, portHex] = cols[1].split(":");
      if (parseInt(portHex, 16) !== port) continue;
      found = true;
      if (!loopbackHex(addr)) {
        throw new Error(`${name} listens on a non-loopback address (${addr}:${port})`);
      }
    }
  }
  if (!found) throw new Error(`${name}: no listener on port ${port}`);
}

// ---- /proc readings

let clkTck = 100;

/** CPU ms (user + system) of every live member of a process group. */
async function groupCpuMs(pgid: number): Promise<number> {
  let ticks = 0;
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    const stat = await Deno.readTextFile(`/proc/${entry.name}/stat`).catch(() => "");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(fields[2]) === pgid) ticks += Number(fields[11]) + Number(fields[12]);
  }
  return ticks * 1000 / clkTck;
}

async function memoryKiB(pid: number): Promise<{ rss: number; hwm: number }> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1]);
  return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
}

async function countLines(path: string): Promise<number> {
  using file = await Deno.open(path);
  let lines = 0;
  for await (const chunk of file.readable) {
    for (const b of chunk) if (b === 10) lines++;
  }
  return lines;
}

async function output(cmd: string, args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(cmd, {
      args,
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(10_000),
    }).output();
    const dec = new TextDecoder();
    return (dec.decode(out.stdout) + dec.decode(out.stderr)).trim();
  } catch (err) {
    return `unavailable (${(err as Error).message})`;
  }
}

/** The commit the measured gateway was built from, and whether src/ differed from it. */
async function sourceRevision(): Promise<string> {
  const sha = await output("git", ["-C", ROOT, "rev-parse", "--short", "HEAD"]);
  if (!/^[0-9a-f]+$/.test(sha)) return "unknown (not a git checkout)";
  const dirty = await output("git", [
    "--no-optional-locks",
    "-C",
    ROOT,
    "status",
    "--porcelain",
    "--",
    "src",
  ]);
  return `commit ${sha}${dirty ? " with uncommitted changes in src/" : ""}`;
}

async function machine(): Promise<string[]> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const meminfo = await Deno.readTextFile("/proc/meminfo").catch(() => "");
  const memKb = Number(/MemTotal:\s+(\d+) kB/.exec(meminfo)?.[1]);
  return [
    `- cores (nproc): ${await output("nproc", [])}`,
    `- CPU: ${/model name\s*:\s*(.*)/.exec(cpuinfo)?.[1]?.trim() ?? "unknown"}`,
    `- memory: ${(memKb / 1024 / 1024).toFixed(1)} GiB`,
    `- kernel: Linux ${Deno.osRelease()}`,
    `- deno ${Deno.version.deno} (V8 ${Deno.version.v8}), node ${await output("node", [
      "--version",
    ])}, ${(await output("wrk", ["-v"])).split("\n")[0].replace(/ Copyright.*/, "")}`,
    `- date: ${new Date().toISOString()}; load average at start: ${
      (await Deno.readTextFile("/proc/loadavg").catch(() => "?")).split(" ").slice(0, 3).join(" ")
    }`,
    `- gateway source: ${await sourceRevision()}`,
    `- load generator (wrk, stream clients), mock, targets and their services share these cores`,
  ];
}

// ---- wrk

interface WrkResult {
  rps: number;
  requests: number;
  p50: number;
  p99: number;
  non2xx: number;
  errors: number;
  /** CPU ms per request of the target's processes during the measured run, by label. */
  cpuPerRequest: Record<string, number>;
}

interface Target {
  name: "direct" | "floor" | "ours" | "every-trace" | "peer";
  /** The name in the report, when not the name. */
  label?: string;
  /** The chat completions endpoint. */
  url: string;
  headers: Record<string, string>;
  /** Process groups whose CPU is the target's: label → pgid. */
  groups: Record<string, number>;
  /** Why the target was not measured. */
  skipped?: string;
}

async function runWrk(
  procs: Processes,
  t: Target,
  tag: string,
  threads: number,
  conns: number,
  seconds: number,
  warmup: number,
): Promise<WrkResult> {
  const lua = `${procs.dir}/${t.name}.lua`;
  await Deno.writeTextFile(lua, luaScript(t.headers));
  const wrk = (name: string, d: number) =>
    procs.run(name, "wrk", [
      `-t${threads}`,
      `-c${conns}`,
      `-d${d}s`,
      "--timeout",
      "10s",
      "-s",
      lua,
      t.url,
    ], (d + 30) * 1000);
  if (warmup > 0) await wrk(`wrk-${t.name}-${tag}-warmup`, warmup);
  const cpu0 = Object.fromEntries(
    await Promise.all(Object.entries(t.groups).map(async ([k, g]) => [k, await groupCpuMs(g)])),
  );
  const { code, output } = await wrk(`wrk-${t.name}-${tag}`, seconds);
  const cpu1 = Object.fromEntries(
    await Promise.all(Object.entries(t.groups).map(async ([k, g]) => [k, await groupCpuMs(g)])),
  );
  const line = /RESULT (.*)/.exec(output)?.[1];
  if (code !== 0 || !line) throw new Error(`wrk against ${t.name} failed:\n${tail(output)}`);
  const f = Object.fromEntries(
    line.split(" ").map((kv) => kv.split("=")).map(([k, v]) => [
      k,
      Number(v),
    ]),
  );
  return {
    rps: f.rps,
    requests: f.requests,
    p50: f.p50_ms,
    p99: f.p99_ms,
    non2xx: f.non2xx,
    errors: f.errs,
    cpuPerRequest: Object.fromEntries(
      Object.keys(t.groups).map((k) => [k, (cpu1[k] - cpu0[k]) / Math.max(1, f.requests)]),
    ),
  };
}

// ---- targets

async function checkTarget(t: Target, attempts: number): Promise<string | null> {
  let last = "";
  const headers = { ...t.headers, "content-type": "application/json" };
  for (let i = 0; i < attempts; i++) {
    try {
      const res = await fetch(t.url, {
        method: "POST",
        headers,
        body: BODY,
        signal: AbortSignal.timeout(10_000),
      });
      const text = await res.text();
      if (res.ok && text.includes('"choices"')) {
        const s = await fetch(t.url, {
          method: "POST",
          headers,
          body: SSE_BODY,
          signal: AbortSignal.timeout(10_000),
        });
        const st = await s.text();
        if (s.ok && st.includes("data: [DONE]")) return null;
        last = `streaming answered ${s.status}: ${st.slice(0, 300)}`;
      } else {
        last = `answered ${res.status}: ${text.slice(0, 300)}`;
      }
    } catch (err) {
      last = String(err);
    }
    await sleep(500);
  }
  return `${t.name} did not pass the mock's answer through: ${last}`;
}

/** Installs the peer with npm into dir; the error text when it cannot. */
async function installPeer(procs: Processes, dir: string): Promise<string | null> {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(
    `${dir}/package.json`,
    JSON.stringify({
      name: "peerbench",
      private: true,
      dependencies: { "@portkey-ai/gateway": "1.15.x" },
      // Its streaming path needs this one; later versions answer `TypeError: immutable`.
      overrides: { "@hono/node-server": "1.14.1" },
    }),
  );
  // A node --require preload: a listen() without a host binds 127.0.0.1, not all interfaces.
  await Deno.writeTextFile(
    `${dir}/force-loopback.cjs`,
    `const net = require("node:net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const a = args[0];
  if (a && typeof a === "object" && !Array.isArray(a)) {
    if (a.path === undefined && !a.host) args[0] = { ...a, host: "127.0.0.1" };
  } else if (typeof a === "number" || (typeof a === "string" && /^\\d+$/.test(a))) {
    if (typeof args[1] !== "string") {
      if (args[1] == null) args[1] = "127.0.0.1";
      else args.splice(1, 0, "127.0.0.1");
    }
  }
  return listen.apply(this, args);
};
`,
  );
  try {
    const { code, output } = await procs.run(
      "npm-install",
      "npm",
      ["install", "--no-audit", "--no-fund", "--loglevel=error"],
      300_000,
      { cwd: dir },
    );
    if (code !== 0) {
      const lines = output.split("\n").map((l) => l.replace(/^npm (error|ERR!)\s*/, "").trim());
      const errCode = lines.find((l) => l.startsWith("code "))?.slice(5);
      const message = lines.find((l) =>
        l && !/^(code|syscall|errno) |complete log|^[{}]|^at |^\w+: ('|\d)/.test(l)
      ) ?? tail(output, 1);
      const reason = [errCode, message].filter(Boolean).join(": ");
      return `npm install exited ${code}: ${reason.replaceAll("|", "/").slice(0, 300)}`;
    }
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}

async function versionOf(dir: string, pkg: string): Promise<string> {
  const text = await Deno.readTextFile(`${dir}/node_modules/${pkg}/package.json`).catch(() => "{}");
  return JSON.parse(text).version ?? "?";
}

/** Every gateway config variable, blank (ignored), so the parent's environment cannot leak in. */
const GATEWAY_ENV_BLANK = Object.fromEntries(
  [
    "HOST",
    "PORT",
    "MAX_BODY_BYTES",
    "DATA_DIR",
    "JWT_SECRET",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "JWKS_URL",
    "JWKS_FILE",
    "JWKS_ISSUER",
    "JWT_ALGORITHMS",
    "ROLE",
    "LOG_LEVEL",
    "OBSERVABILITY",
    "DATABASE_URL",
    "AGGREGATOR_URL",
    "METERING_SECRET",
    "METERING_SPOOL_FILE",
    "DENO_DEPLOYMENT_ID",
    "BUDGET_STORE",
    "REDIS_REST_URL",
    "REDIS_REST_TOKEN",
    "GLOBAL_DAILY_CAP_USD",
    "ALERT_WEBHOOK_URL",
    "GATEWAY_CONFIG",
    "OTEL_DENO",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
  ].map((k) => [k, ""]),
);

function startOtlpSink() {
  const received: Record<string, number> = {};
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = new URL(req.url).pathname;
    received[path] = (received[path] ?? 0) + 1;
    await req.arrayBuffer();
    return new Response(null, { status: 200 });
  });
  return { url: `http://127.0.0.1:${server.addr.port}`, received, server };
}

// ---- report

const ms = (x: number | undefined, digits = 2) =>
  x !== undefined && Number.isFinite(x) ? x.toFixed(digits) : "—";
const signed = (x: number) => Number.isFinite(x) ? `${x >= 0 ? "+" : ""}${x.toFixed(2)}` : "—";
const ratio = (a: number | undefined, b: number | undefined) =>
  a && b && Number.isFinite(a / b) ? (a / b).toFixed(3) : "n/a";

interface Measured {
  sat?: WrkResult;
  one?: WrkResult;
  sse?: StreamStats;
  ws?: StreamStats;
}

export async function run(args: string[]): Promise<string> {
  const { values } = parseArgs({
    args,
    options: {
      quick: { type: "boolean", default: false },
      peer: { type: "boolean", default: false },
      "no-peer": { type: "boolean", default: false },
      out: { type: "string" },
      "cpu-prof": { type: "string" },
      pg: { type: "string", default: "postgres://postgres@127.0.0.1:5432/postgres" },
      redis: { type: "string", default: "redis://127.0.0.1:6379" },
    },
  });
  const quick = values.quick!;
  const plan = quick ? QUICK : FULL;
  const withPeer = !values["no-peer"] && (!quick || values.peer!);
  const out = values.out ?? (quick ? undefined : `${ROOT}docs/benchmarks.md`);
  for (const url of [values.pg!, values.redis!]) {
    const host = new URL(url).hostname;
    if (host !== "127.0.0.1" && host !== "localhost") throw new Error(`not loopback: ${url}`);
  }
  const mockChunks = Number(Deno.env.get("MOCK_CHUNKS") ?? 20);
  const mockChunkMs = Number(Deno.env.get("MOCK_CHUNK_MS") ?? 5);
  const mockLatencyMs = Number(Deno.env.get("MOCK_LATENCY_MS") ?? 0);
  const startedAt = performance.now();
  const progress = (msg: string) =>
    console.error(`[bench ${((performance.now() - startedAt) / 1000).toFixed(1)}s] ${msg}`);

  const wrkVersion = await output("wrk", ["-v"]);
  if (!/^wrk /.test(wrkVersion)) throw new Error("wrk is not installed (apt-get install -y wrk)");
  clkTck = Number(await output("getconf", ["CLK_TCK"])) || 100;

  const dir = await Deno.makeTempDir({ prefix: "gateway-bench-" });
  const procs = new Processes(dir);
  const sink = startOtlpSink();
  const runId = crypto.randomUUID().replaceAll("-", "").slice(0, 12);
  const dbName = `cvg_bench_${runId}`;
  const redisPrefix = `cvgbench-${runId}`;
  const admin = postgres(values.pg!, { max: 1, onnotice: () => {} });
  let dbCreated = false;
  let cleaning: Promise<void> | undefined;
  /** Stops and removes everything this run made; once, however many callers ask. */
  const cleanup = () =>
    cleaning ??= (async () => {
      await procs.stopAll();
      if (dbCreated) {
        await admin.unsafe(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch(() => {});
      }
      await admin.end({ timeout: 5 }).catch(() => {});
      await deleteRedisKeys(values.redis!, redisPrefix).catch(() => 0);
      await sink.server.shutdown();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    })();
  let interrupted = false;
  const interruptedExit = async () => {
    await Promise.race([cleanup(), sleep(30_000)]);
    Deno.exit(130);
  };
  const onSignal = () => {
    if (interrupted) return;
    interrupted = true;
    console.error("bench: interrupted; stopping every process it started");
    interruptedExit();
  };
  const onUnload = () => procs.killAllNow();
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  globalThis.addEventListener("unload", onUnload);

  try {
    const deno = Deno.execPath();
    const machineLines = await machine();

    // The peer first: its npm install is the slow, failure-prone part.
    let peerNote: string | undefined = withPeer
      ? undefined
      : `skipped (${values["no-peer"] ? "--no-peer" : "--quick without --peer"})`;
    const peerDir = `${dir}/peer`;
    if (withPeer) {
      progress("installing the peer (@portkey-ai/gateway 1.15.x) with npm");
      const err = await installPeer(procs, peerDir);
      if (err) {
        peerNote = `not installed (${err})`;
        progress(`peer: ${peerNote}`);
      }
    }

    progress("starting mock, floor, aggregator (fresh Postgres database), Redis REST bridge");
    const mock = procs.start(
      "mock",
      deno,
      ["run", "--allow-net", "--allow-env", "scripts/bench/mock_upstream.ts"],
      {
        env: {
          MOCK_PORT: "0",
          MOCK_CHUNKS: String(mockChunks),
          MOCK_CHUNK_MS: String(mockChunkMs),
          MOCK_LATENCY_MS: String(mockLatencyMs),
        },
      },
    );
    const secret = crypto.randomUUID() + crypto.randomUUID();
    const meteringSecret = crypto.randomUUID() + crypto.randomUUID();
    const bridgeToken = crypto.randomUUID();
    await admin.unsafe(`CREATE DATABASE ${dbName}`);
    dbCreated = true;
    const databaseUrl = values.pg!.replace(/\/[^/]*$/, `/${dbName}`);
    await Deno.mkdir(`${dir}/aggregator`);
    await Deno.mkdir(`${dir}/edge`);
    const aggregator = procs.start(
      "aggregator",
      deno,
      ["run", "--allow-net", "--allow-env", "--allow-read", "--allow-write", "src/main.ts"],
      {
        env: {
          ...GATEWAY_ENV_BLANK,
          ROLE: "aggregator",
          PORT: "0",
          DATABASE_URL: databaseUrl,
          METERING_SECRET: meteringSecret,
          DATA_DIR: `${dir}/aggregator`,
          LOG_LEVEL: "info",
        },
      },
    );
    const bridge = procs.start("bridge", deno, ["task", "redis-bridge"], {
      env: { BRIDGE_TOKEN: bridgeToken, BRIDGE_PORT: "0", REDIS_URL: values.redis! },
    });
    const mockUrl = await waitForLog(mock, /mock upstream on (http:\/\/127\.0\.0\.1:\d+)/);
    const floor = procs.start(
      "floor",
      deno,
      ["run", "--allow-net", "--allow-env", "scripts/bench/floor_proxy.ts"],
      { env: { FLOOR_UPSTREAM: mockUrl, FLOOR_PORT: "0" } },
    );
    const [floorUrl, aggregatorUrl, bridgeUrl] = await Promise.all([
      waitForLog(floor, /floor proxy on (http:\/\/127\.0\.0\.1:\d+)/),
      waitForLog(aggregator, /listening on (http:\/\/[\d.]+:\d+)/),
      waitForLog(bridge, /redis REST bridge on (http:\/\/[\d.]+:\d+)/),
    ]);

    progress("starting the edge (everything on)");
    await Deno.writeTextFile(
      `${dir}/edge/gateway.json`,
      JSON.stringify(benchGatewayConfig(mockUrl, redisPrefix)),
    );
    const profile = values["cpu-prof"]
      ? ["--cpu-prof", `--cpu-prof-dir=${values["cpu-prof"]}`]
      : [];
    /** An edge process with everything on; tracing as the sampler env says. Resolves once it listens. */
    const startEdge = async (
      name: string,
      sampler: Record<string, string>,
      flags: string[] = [],
    ) => {
      await Deno.mkdir(`${dir}/${name}`, { recursive: true });
      const p = procs.start(
        name,
        deno,
        [
          "run",
          ...flags,
          "--allow-net",
          "--allow-env",
          "--allow-read",
          "--allow-write",
          "src/main.ts",
        ],
        {
          env: {
            ...GATEWAY_ENV_BLANK,
            ROLE: "edge",
            PORT: "0",
            GATEWAY_CONFIG: `${dir}/edge/gateway.json`,
            DATA_DIR: `${dir}/${name}`,
            AGGREGATOR_URL: aggregatorUrl,
            METERING_SECRET: meteringSecret,
            BUDGET_STORE: "redis",
            REDIS_REST_URL: bridgeUrl,
            REDIS_REST_TOKEN: bridgeToken,
            JWT_SECRET: secret,
            LOG_LEVEL: "info",
            OTEL_DENO: "true",
            OTEL_EXPORTER_OTLP_ENDPOINT: sink.url,
            OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf",
            OTEL_SERVICE_NAME: `convergio-${name}-bench`,
            ...sampler,
          },
        },
      );
      const url = await waitForLog(p, /listening on (http:\/\/[\d.]+:\d+)/);
      if (!isLoopbackUrl(url)) throw new Error(`${name} is not on loopback: ${url}`);
      await assertLoopbackListener(name, url);
      return { proc: p, url };
    };
    const { proc: edge, url: edgeUrl } = await startEdge("edge", {
      OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
      OTEL_TRACES_SAMPLER_ARG: String(TRACE_SAMPLE_RATIO),
    }, profile);
    const token = await benchToken(secret, "managed");

    let peerUrl = "";
    let peerProc: Proc | undefined;
    if (withPeer && !peerNote) {
      progress("starting the peer with node");
      const port = freePort();
      peerProc = procs.start("peer", "node", [
        "--require",
        `${peerDir}/force-loopback.cjs`,
        `${peerDir}/node_modules/@portkey-ai/gateway/build/start-server.js`,
        `--port=${port}`,
        "--headless",
      ], { cwd: peerDir });
      try {
        await waitForPort(peerProc, port);
        peerUrl = `http://127.0.0.1:${port}`;
      } catch (err) {
        peerNote = `not started (${(err as Error).message.split("\n")[0]})`;
      }
    }

    for (
      const [name, url] of [
        ["mock", mockUrl],
        ["floor", floorUrl],
        ["aggregator", aggregatorUrl],
        ["bridge", bridgeUrl],
        ...(peerUrl ? [["peer", peerUrl]] : []),
      ]
    ) {
      if (!isLoopbackUrl(url)) throw new Error(`${name} is not on loopback: ${url}`);
      await assertLoopbackListener(name, url);
    }

    const chat = "/v1/chat/completions";
    const targets: Target[] = [
      {
        name: "direct",
        url: `${mockUrl}${chat}`,
        headers: { Authorization: "Bearer sk-mock" },
        groups: { mock: mock.pid },
      },
      {
        name: "floor",
        url: `${floorUrl}${chat}`,
        headers: { Authorization: "Bearer sk-mock" },
        groups: { floor: floor.pid },
      },
      {
        name: "ours",
        url: `${edgeUrl}${chat}`,
        headers: { Authorization: `Bearer ${token}` },
        groups: { edge: edge.pid, aggregator: aggregator.pid, bridge: bridge.pid },
      },
      {
        name: "peer",
        url: `${peerUrl}${chat}`,
        headers: {
          "x-portkey-provider": "openai",
          "x-portkey-custom-host": `${mockUrl}/v1`,
          Authorization: "Bearer sk-mock",
        },
        groups: peerProc ? { peer: peerProc.pid } : {},
        skipped: peerUrl ? undefined : peerNote,
      },
    ];
    /** Ours with every trace recorded: its own edge, started once ours is measured (below). */
    const everyTrace: Target = {
      name: "every-trace",
      label: "ours, every trace",
      url: "",
      headers: { Authorization: `Bearer ${token}` },
      groups: {},
    };
    for (const t of targets) {
      if (t.skipped) continue;
      const err = await checkTarget(t, t.name === "peer" ? 30 : 10);
      if (err && t.name === "peer") t.skipped = `not working (${err})`;
      else if (err) throw new Error(err);
    }
    const peer = targets[3];
    if (peer.skipped && peerProc) {
      await procs.stop(peerProc);
      peerProc = undefined;
    }

    const results: Record<string, Measured> = {};
    /** wrk saturation (50 conns), then the single-connection run. */
    const measureLoad = async (t: Target) => {
      progress(
        `${t.label ?? t.name}: wrk ${THREADS} threads ${CONNS} conns ${plan.satSeconds}s ` +
          `(+${plan.satWarmup}s warm-up), then 1 conn ${plan.latSeconds}s (+${plan.latWarmup}s)`,
      );
      const sat = await runWrk(procs, t, "sat", THREADS, CONNS, plan.satSeconds, plan.satWarmup);
      const one = await runWrk(procs, t, "one", 1, 1, plan.latSeconds, plan.latWarmup);
      results[t.name] = { sat, one };
    };
    const live = targets.filter((t) => !t.skipped);
    for (const t of live) await measureLoad(t);
    for (const t of live) {
      progress(
        `${t.name}: ${plan.streamN} sequential SSE requests (+${plan.streamWarmup} warm-up)`,
      );
      results[t.name].sse = await measureSse({
        url: t.url,
        headers: t.headers,
        n: plan.streamN,
        warmup: plan.streamWarmup,
      });
    }
    progress(`ours: ${plan.streamN} sequential chat.start over /v1/ws (+${plan.streamWarmup})`);
    results.ours.ws = await measureWs({
      url: `${edgeUrl.replace(/^http/, "ws")}/v1/ws`,
      token,
      n: plan.streamN,
      warmup: plan.streamWarmup,
    });

    progress("reading the edge: memory, requests served, metering");
    const mem = await memoryKiB(edge.pid);
    const metricsText = await (await fetch(`${edgeUrl}/metrics`, {
      signal: AbortSignal.timeout(10_000),
    })).text();
    let served = 0, served2xx = 0;
    for (const line of metricsText.split("\n")) {
      if (!line.startsWith("convergio_http_requests_total{")) continue;
      const n = Number(line.slice(line.lastIndexOf(" ") + 1));
      served += n;
      if (line.includes('status_class="2xx"')) served2xx += n;
    }
    const heapMiB = (kind: string) =>
      Number(
        new RegExp(`^convergio_process_memory_bytes\\{kind="${kind}"\\} (\\d+)`, "m")
          .exec(metricsText)?.[1],
      ) / 1048576;
    // Stopping the edge flushes its metering spool to the aggregator.
    await procs.stop(edge, 20_000);
    const logLines = await countLines(edge.log);
    const db = postgres(databaseUrl, { max: 1, onnotice: () => {} });
    const [{ rows: meteredRows }] = await db`SELECT count(*)::int AS rows FROM usage_events`;
    await db.end({ timeout: 5 });
    const redisKeys = await countRedisKeys(values.redis!, redisPrefix);
    const oursExports = { ...sink.received };

    // Ours is measured and its edge stopped: the same edge, recording every trace, now runs
    // alone on these cores, measured the same way (wrk only), then stopped.
    progress("starting the every-trace edge (OTEL_TRACES_SAMPLER=always_on)");
    const all = await startEdge("edge-every-trace", { OTEL_TRACES_SAMPLER: "always_on" });
    everyTrace.url = `${all.url}${chat}`;
    everyTrace.groups = { edge: all.proc.pid, aggregator: aggregator.pid, bridge: bridge.pid };
    const everyTraceErr = await checkTarget(everyTrace, 10);
    if (everyTraceErr) throw new Error(everyTraceErr);
    await measureLoad(everyTrace);
    await procs.stop(all.proc, 20_000);
    const everyTraceExports = Object.entries(sink.received)
      .map(([k, v]) => [k, v - (oursExports[k] ?? 0)] as const)
      .filter(([, v]) => v > 0);
    const peerVersions = peer.skipped ? "" : `@portkey-ai/gateway ${await versionOf(
      peerDir,
      "@portkey-ai/gateway",
    )}, @hono/node-server ${await versionOf(
      peerDir,
      "@hono/node-server",
    )}, node ${(await output("node", ["--version"]))}`;
    const elapsed = (performance.now() - startedAt) / 1000;

    // ---- the report
    const d = results.direct;
    const added = (r: Measured | undefined) =>
      r?.one && d.one ? `${signed(r.one.p50 - d.one.p50)} / ${signed(r.one.p99 - d.one.p99)}` : "—";
    /** Streaming cells: "n/a" for a target measured with wrk only. */
    const streamed = (s: StreamStats | undefined, cell: (s: StreamStats) => string) =>
      s ? cell(s) : "n/a";
    const shown = [...targets.slice(0, 3), everyTrace, ...targets.slice(3)];
    const row = (t: Target) => {
      const r = results[t.name];
      const name = t.label ?? t.name;
      if (!r) return `| ${name} | ${t.skipped} | — | — | — | — | — | — |`;
      return `| ${name} | ${Math.round(r.sat!.rps)} | ${ms(r.sat!.p50)} | ${ms(r.sat!.p99)} | ${
        t.name === "direct" ? "0 / 0 (baseline)" : added(r)
      } | ${streamed(r.sse, (s) => ms(s.ttfbMs.p50))} | ${
        streamed(r.sse, (s) => ms(s.totalMs.p50))
      } | ${r.ws ? ms(r.ws.ttfbMs.p50) : "n/a"} |`;
    };
    const detail = (t: Target) => {
      const r = results[t.name];
      const name = t.label ?? t.name;
      if (!r) return `| ${name} | ${t.skipped} | | | | | | | |`;
      const cpu = Object.entries(r.sat!.cpuPerRequest).map(([k, v]) => `${k} ${v.toFixed(3)}`)
        .join(", ");
      const s = r.sse;
      return `| ${name} | ${ms(r.one!.p50, 3)} / ${ms(r.one!.p99, 3)} | ${
        Math.round(r.one!.rps)
      } | ${r.sat!.non2xx} / ${r.sat!.errors} | ${cpu || "—"} | ${
        streamed(s, (s) => `${s.ok}/${s.n}`)
      } | ${streamed(s, (s) => ms(s.ttfbMs.p99))} | ${
        streamed(s, (s) => ms(s.firstContentMs?.p50))
      } | ${streamed(s, (s) => ms(s.totalMs.p99))} |${
        s?.firstError ? ` first error: ${s.firstError.slice(0, 120)}` : ""
      }`;
    };
    const o = results.ours, et = results[everyTrace.name], fl = results.floor, pr = results.peer;
    const addedP50 = (r: Measured) => `${signed(r.one!.p50 - d.one!.p50)} ms`;
    const edgeCpu = (r: Measured) => ms(r.sat!.cpuPerRequest.edge, 3);
    const exportsText = (entries: (readonly [string, number])[]) =>
      entries.map(([k, v]) => `${k} ${v}`).join(", ") || "none";
    const ws = o.ws!;
    const addedTtfb = (r: Measured | undefined) =>
      r?.sse && d.sse ? `${signed(r.sse.ttfbMs.p50 - d.sse.ttfbMs.p50)} ms` : "n/a";
    const report = [
      `# Benchmarks: the gateway side by side`,
      ``,
      `Generated by \`deno task bench${
        quick ? " --quick" : ""
      }\` (scripts/bench/gateway_bench.ts) ` +
      `in one run of ${elapsed.toFixed(0)} s, loopback only. Do not edit by hand: run it again.`,
      ``,
      `## Machine`,
      ``,
      ...machineLines,
      ``,
      `## Setup`,
      ``,
      `- upstream: \`scripts/bench/mock_upstream.ts\` in its own process (OpenAI wire; ` +
      `${mockChunks} SSE chunks ${mockChunkMs} ms apart, ${mockLatencyMs} ms latency).`,
      `- **direct**: straight to the mock.`,
      `- **floor**: \`scripts/bench/floor_proxy.ts\`, a bare \`Deno.serve\` pass-through ` +
      `(\`fetch\` to the mock, its body streamed back as is), own process.`,
      `- **ours**: the gateway edge process (\`ROLE=edge\`) with everything on: JWT verify ` +
      `(managed-lane token), Redis budgets and rate limits (\`BUDGET_STORE=redis\` through the ` +
      `Upstash-REST bridge process, \`deno task redis-bridge\`, in front of the real Redis; ` +
      `local admission on, its default: no round trip before the provider for requests far from ` +
      `every limit, one charge after the response), ` +
      `metering to a real aggregator process (\`ROLE=aggregator\`, a fresh Postgres database), ` +
      `Prometheus metrics, \`LOG_LEVEL=info\` request logs and OTLP tracing with ` +
      `${samplePct} % parent-based head sampling (\`OTEL_DENO=true\`, ` +
      `\`OTEL_TRACES_SAMPLER=parentbased_traceidratio\`, ` +
      `\`OTEL_TRACES_SAMPLER_ARG=${TRACE_SAMPLE_RATIO}\`; the load carries no \`traceparent\`, ` +
      `so every request is a root and ${samplePct} % of them are recorded), ` +
      `exported to a local sink answering 200.`,
      `- **ours, every trace**: a second edge process, the same as ours but ` +
      `\`OTEL_TRACES_SAMPLER=always_on\` (Deno's default: every request traced and exported), ` +
      `sharing ours' aggregator, bridge and Redis; it shows what full tracing costs. Started ` +
      `once ours was measured and its edge stopped, and stopped after its own runs, so the two ` +
      `edges never run at once; measured with the same wrk runs only (no SSE or WS: n/a).`,
      `- **peer**: ${
        peer.skipped
          ? `Portkey AI Gateway: ${peer.skipped}.`
          : `Portkey AI Gateway (${peerVersions}), installed with npm at run time into a temp ` +
            `folder, bound to 127.0.0.1 by a \`--require\` preload; requests carry ` +
            `\`x-portkey-provider: openai\` and \`x-portkey-custom-host: <mock>/v1\`.`
      }`,
      `- load: \`wrk\` ${THREADS} threads, ${CONNS} connections, ${plan.satSeconds} s after a ` +
      `${plan.satWarmup} s warm-up run; single connection (\`wrk -t1 -c1\`) ${plan.latSeconds} s ` +
      `after ${plan.latWarmup} s. Non-streamed body: \`${BODY}\`.`,
      `- streaming: ${plan.streamN} sequential \`stream: true\` requests over one keep-alive ` +
      `connection after ${plan.streamWarmup} warm-up (TTFB: first body byte; total: end of ` +
      `body); WS: the same count of \`chat.start\` over one \`/v1/ws\` socket (TTFB: first ` +
      `\`chat.token\`; total: \`chat.complete\`).`,
      ``,
      `## Results`,
      ``,
      `| target | RPS (50 conns) | P50 ms | P99 ms | added P50 / P99 ms (1 conn, vs direct) | SSE TTFB P50 ms | SSE total P50 ms | WS TTFB P50 ms |`,
      `|---|---|---|---|---|---|---|---|`,
      ...shown.map(row),
      ``,
      `Ratios:`,
      ``,
      `- throughput ours/floor: **${ratio(o.sat?.rps, fl.sat?.rps)}**; ours/peer: **${
        ratio(o.sat?.rps, pr?.sat?.rps)
      }**; ours/direct: ${ratio(o.sat?.rps, d.sat?.rps)}; floor/direct: ${
        ratio(fl.sat?.rps, d.sat?.rps)
      }${pr ? `; peer/direct: ${ratio(pr.sat?.rps, d.sat?.rps)}` : ""}`,
      `- full tracing: throughput ours/every-trace: **${ratio(o.sat?.rps, et.sat?.rps)}**; ` +
      `added P50 (1 connection, vs direct): ours ${addedP50(o)}, every trace ${addedP50(et)}; ` +
      `edge CPU ms per request (50 conns): ours ${edgeCpu(o)}, every trace ${edgeCpu(et)}`,
      `- added latency, 1 connection, P50 / P99 vs direct: ours ${added(o)} ms; floor ${
        added(fl)
      } ms${pr ? `; peer ${added(pr)} ms` : ""}; ours over the floor: ${
        signed(o.one!.p50 - fl.one!.p50)
      } / ${signed(o.one!.p99 - fl.one!.p99)} ms`,
      `- added SSE TTFB P50 vs direct: ours ${addedTtfb(o)}; floor ${addedTtfb(fl)}${
        pr ? `; peer ${addedTtfb(pr)}` : ""
      }; WS first token P50 ${ms(ws.ttfbMs.p50)} ms, P99 ${ms(ws.ttfbMs.p99)} ms, complete P50 ${
        ms(ws.totalMs.p50)
      } ms (${ws.ok}/${ws.n} ok${ws.firstError ? `, first error: ${ws.firstError}` : ""})`,
      ``,
      `## Details`,
      ``,
      `| target | 1 conn P50 / P99 ms | 1 conn RPS | 50 conns non-2xx / socket errors | CPU ms per request (50 conns) | SSE ok | SSE TTFB P99 ms | SSE first content P50 ms | SSE total P99 ms |`,
      `|---|---|---|---|---|---|---|---|---|`,
      ...shown.map(detail),
      ``,
      `## The edge process (ours) after the runs`,
      ``,
      `- memory: VmRSS ${(mem.rss / 1024).toFixed(1)} MiB, peak (VmHWM) ${
        (mem.hwm / 1024).toFixed(1)
      } MiB; JS heap (\`convergio_process_memory_bytes\`) ${heapMiB("heap_used").toFixed(1)} MiB ` +
      `used of ${heapMiB("heap_total").toFixed(1)} MiB reserved (used counts garbage not yet ` +
      `collected)`,
      `- requests served (\`convergio_http_requests_total\`): ${served} (${served2xx} 2xx)`,
      `- usage events metered into the aggregator's Postgres: ${meteredRows}`,
      `- request log lines written: ${logLines}`,
      `- budget keys in Redis (prefix \`${redisPrefix}\`, deleted after): ${redisKeys}`,
      `- OTLP exports received by the sink: ${exportsText(Object.entries(oursExports))}; ` +
      `from the every-trace edge, for its own runs: ${exportsText(everyTraceExports)}`,
    ].join("\n");
    progress("done");

    await cleanup();
    if (out) {
      await Deno.writeTextFile(out, report + "\n");
      // Written formatted, so `deno fmt --check` holds for the committed report.
      await output(deno, ["fmt", "--quiet", out]);
      return await Deno.readTextFile(out);
    }
    return report;
  } catch (err) {
    // Interrupted: the run fails as its processes stop; the signal handler exits once all are.
    if (interrupted) await interruptedExit();
    throw err;
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    globalThis.removeEventListener("unload", onUnload);
    await cleanup();
  }
}

async function withRedis<T>(url: string, fn: (r: ReturnType<typeof createClient>) => Promise<T>) {
  const redis = createClient({ url, socket: { connectTimeout: 2_000, reconnectStrategy: false } });
  redis.on("error", () => {});
  await redis.connect();
  try {
    return await fn(redis);
  } finally {
    await redis.close().catch(() => {});
  }
}

async function scanKeys(redis: ReturnType<typeof createClient>, prefix: string) {
  const keys: string[] = [];
  for await (const batch of redis.scanIterator({ MATCH: `${prefix}:*`, COUNT: 1000 })) {
    keys.push(...(Array.isArray(batch) ? batch : [batch]).map(String));
    if (keys.length > 1_000_000) break;
  }
  return keys;
}

function countRedisKeys(url: string, prefix: string): Promise<number> {
  return withRedis(url, async (r) => (await scanKeys(r, prefix)).length);
}

function deleteRedisKeys(url: string, prefix: string): Promise<number> {
  return withRedis(url, async (r) => {
    const keys = await scanKeys(r, prefix);
    for (let i = 0; i < keys.length; i += 500) await r.del(keys.slice(i, i + 500));
    return keys.length;
  });
}

if (import.meta.main) console.log(await run(Deno.args));
