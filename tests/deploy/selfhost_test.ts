/**
 * The self-hosted service files stay true to the code: the systemd unit passes
 * `systemd-analyze verify` and carries the hardening and the stop timeout the
 * metering flush needs; the Containerfile pins the CI's Deno version, runs the
 * same command as `deno task start` as a non-root user, and its HEALTHCHECK
 * command really checks a running gateway.
 */
import assert from "node:assert/strict";
import { buildConfigSchema } from "../../src/config.ts";
import { startGateway } from "../support/gateway.ts";

const ROOT = decodeURIComponent(new URL("../../", import.meta.url).pathname);
const UNIT = `${ROOT}infra/selfhost/convergio-gateway.service`;
const CONTAINERFILE = `${ROOT}infra/selfhost/Containerfile`;
const defaults = buildConfigSchema({}).parse({ providers: {}, models: {} });

async function run(cmd: string, args: string[], opts: { env?: Record<string, string> } = {}) {
  const out = await new Deno.Command(cmd, {
    args,
    cwd: ROOT,
    env: opts.env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, output: text.decode(out.stdout) + text.decode(out.stderr) };
}

async function has(cmd: string): Promise<boolean> {
  try {
    await new Deno.Command(cmd, { args: ["--version"], stdout: "null", stderr: "null" }).output();
    return true;
  } catch {
    return false;
  }
}

/** The flags of `deno task start`, and its entrypoint. */
async function startTask(): Promise<{ flags: string[]; entrypoint: string }> {
  const deno = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
  const words: string[] = deno.tasks.start.split(/\s+/);
  assert.deepEqual(words.slice(0, 2), ["deno", "run"]);
  return { flags: words.filter((w) => w.startsWith("--")), entrypoint: words.at(-1)! };
}

/** A service's command is the start task's, writing only its data dir, never downloading. */
async function assertStartCommand(argv: string[], dataDir: string) {
  const start = await startTask();
  assert.deepEqual(argv.slice(0, 2), ["deno", "run"]);
  assert.equal(argv.at(-1), start.entrypoint);
  const expected = start.flags.map((f) =>
    f.startsWith("--allow-write") ? `--allow-write=${dataDir}` : f
  );
  assert.deepEqual(argv.slice(2, -1).sort(), ["--cached-only", ...expected].sort());
}

/** `Key=value` lines of a unit file, by key (repeatable keys keep every value). */
function unitKeys(text: string): Map<string, string[]> {
  const keys = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m) keys.set(m[1], [...(keys.get(m[1]) ?? []), m[2]]);
  }
  return keys;
}

Deno.test({
  name: "systemd-analyze verify accepts the unit, without a warning",
  ignore: !(await has("systemd-analyze")),
  async fn() {
    let unit = UNIT;
    let dir: string | undefined;
    // verify checks that ExecStart's binary exists; CI may have Deno elsewhere.
    if (!(await Deno.stat("/usr/bin/deno").catch(() => undefined))) {
      dir = await Deno.makeTempDir();
      unit = `${dir}/convergio-gateway.service`;
      const text = await Deno.readTextFile(UNIT);
      await Deno.writeTextFile(
        unit,
        text.replace("ExecStart=/usr/bin/deno", `ExecStart=${Deno.execPath()}`),
      );
    }
    try {
      const res = await run("systemd-analyze", ["verify", unit]);
      assert.equal(res.code, 0, res.output);
      // Unknown keys and bad values are warnings with exit 0: any output fails.
      assert.equal(res.output.trim(), "");
    } finally {
      if (dir) await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("the systemd unit: dedicated user, hardening, flush-safe stop, the start task's command", async () => {
  const keys = unitKeys(await Deno.readTextFile(UNIT));
  const one = (key: string) => {
    const values = keys.get(key);
    assert.ok(values?.length === 1, `${key}: ${values}`);
    return values[0];
  };
  assert.equal(one("User"), "convergio");
  assert.equal(one("Group"), "convergio");
  assert.match(one("EnvironmentFile"), /^\/etc\/convergio-gateway\/\S+\.env$/);
  for (
    const [key, value] of Object.entries({
      NoNewPrivileges: "yes",
      ProtectSystem: "strict",
      ProtectHome: "yes",
      PrivateTmp: "yes",
      PrivateDevices: "yes",
      RestrictSUIDSGID: "yes",
      CapabilityBoundingSet: "",
      Restart: "on-failure",
      KillSignal: "SIGTERM",
    })
  ) {
    assert.equal(one(key), value, key);
  }
  assert.ok(!keys.has("MemoryDenyWriteExecute"), "V8's JIT needs W^X off");

  const env = Object.fromEntries(keys.get("Environment")!.map((e) => e.split("=", 2)));
  const dataDir = env.DATA_DIR;
  assert.equal(dataDir, `/var/lib/${one("StateDirectory")}`);
  assert.deepEqual(keys.get("ReadWritePaths"), [dataDir]);
  assert.equal(env.DENO_DIR, `/var/cache/${one("CacheDirectory")}`);

  // Long enough for the metering spool flush, with room for draining streams.
  const stop = /^(\d+)s$/.exec(one("TimeoutStopSec"));
  assert.ok(stop);
  assert.ok(Number(stop[1]) * 1000 >= 2 * defaults.metering.shutdown_flush_ms);
  assert.ok(Number(one("LimitNOFILE")) >= 65536);

  const argv = one("ExecStart").split(/\s+/);
  assert.equal(argv[0], "/usr/bin/deno");
  await assertStartCommand(["deno", ...argv.slice(1)], dataDir);
});

/** Containerfile instructions, continuation lines joined. */
function instructions(text: string): Array<[string, string]> {
  return text.replace(/\\\n\s*/g, "").split("\n").map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"))
    .map((l) => {
      const space = l.indexOf(" ");
      return [l.slice(0, space), l.slice(space + 1)];
    });
}

Deno.test("the Containerfile: CI's Deno version, locked deps, non-root, the start task's command", async () => {
  const steps = instructions(await Deno.readTextFile(CONTAINERFILE));
  const all = (op: string) => steps.filter(([o]) => o === op).map(([, arg]) => arg);
  const ci = await Deno.readTextFile(`${ROOT}.ci/run`);
  const pinned = /npm install -g deno@(\d+\.\d+\.\d+)/.exec(ci)?.[1];
  assert.ok(pinned, ".ci/run pins a Deno version");
  assert.deepEqual(all("ARG"), [`DENO_VERSION=${pinned}`]);
  assert.deepEqual(all("FROM"), ["docker.io/denoland/deno:${DENO_VERSION}"]);
  assert.equal(steps[0][0], "ARG");

  const env = Object.fromEntries(
    all("ENV").join(" ").split(/\s+/).map((kv) => kv.split("=", 2)),
  );
  assert.equal(env.HOST, "0.0.0.0");
  assert.deepEqual(all("EXPOSE"), [env.PORT]);
  assert.equal(Number(env.PORT), defaults.server.port);
  assert.deepEqual(all("VOLUME"), [env.DATA_DIR]);

  const copies = all("COPY");
  assert.deepEqual(copies, ["deno.json deno.lock ./", "src/ ./src/"]);
  const start = await startTask();
  const users = steps.flatMap(([op, arg], i) => op === "USER" ? [[i, arg] as const] : []);
  assert.deepEqual(users.map(([, u]) => u), ["deno"]);
  const cacheAt = steps.findIndex(([op, arg]) =>
    op === "RUN" && arg === `deno cache --frozen-lockfile ${start.entrypoint}`
  );
  assert.ok(cacheAt > users[0][0], "dependencies cached as the runtime user");
  assert.equal(steps.at(-1)![0], "CMD");
  await assertStartCommand(JSON.parse(steps.at(-1)![1]), env.DATA_DIR);
  assert.deepEqual(all("STOPSIGNAL"), ["SIGTERM"]);
});

Deno.test("the Containerfile's HEALTHCHECK command passes on a live gateway and fails without one", async () => {
  const steps = instructions(await Deno.readTextFile(CONTAINERFILE));
  const health = steps.find(([op]) => op === "HEALTHCHECK")![1];
  const m = /^(.*?)CMD (\[.*\])$/.exec(health);
  assert.ok(m, health);
  assert.match(m[1], /--interval=\d+s --timeout=\d+s --start-period=\d+s --retries=\d+/);
  const argv: string[] = JSON.parse(m[2]);
  assert.equal(argv[0], "deno");
  const gw = await startGateway();
  try {
    const port = new URL(gw.url).port;
    const up = await run(Deno.execPath(), argv.slice(1), { env: { PORT: port } });
    assert.equal(up.code, 0, up.output);
  } finally {
    await gw.close();
  }
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const closed = String((probe.addr as Deno.NetAddr).port);
  probe.close();
  const down = await run(Deno.execPath(), argv.slice(1), { env: { PORT: closed } });
  assert.notEqual(down.code, 0);
});
