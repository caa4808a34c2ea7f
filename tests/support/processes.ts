import { RevocationList } from "../../src/auth/revocation.ts";
import { createTokenService } from "../../src/auth/tokens.ts";
import { systemClock } from "../../src/clock.ts";
import { buildConfigSchema, type Mode } from "../../src/config.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

export interface GatewayProcesses {
  urls: string[];
  /** Everything the processes wrote to stdout (banner and JSON log lines), per process. */
  stdout: string[];
  token(claims: { tenant: string; user: string; mode: Mode }): Promise<string>;
  /** SIGTERM to all, then waits for exit (and so for background settlements) and drained pipes. */
  stop(): Promise<Deno.CommandStatus[]>;
}

interface Running {
  child: Deno.ChildProcess;
  url: Promise<string>;
  drained: Promise<unknown>;
}

/** Reads a process's stdout to the end, resolving `url` once the banner shows it. */
function spawn(env: Record<string, string>, stdout: string[], i: number): Running {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-env", "--allow-read", "--allow-write", "src/main.ts"],
    cwd: ROOT,
    env: { DENO_COVERAGE_DIR: "coverage", ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  stdout[i] = "";
  let stderr = "";
  const err = new Response(child.stderr).text().then((t) => (stderr = t));
  const { promise: url, resolve, reject } = Promise.withResolvers<string>();
  const out = (async () => {
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      stdout[i] += chunk;
      const found = /listening on (http:\/\/[\d.]+:\d+)/.exec(stdout[i])?.[1];
      if (found) resolve(found);
    }
    await err;
    reject(new Error(`gateway ${i} exited before listening:\n${stdout[i]}\n${stderr}`));
  })();
  return { child, url, drained: Promise.all([out, err]) };
}

/**
 * Spawns `n` real gateway processes (`src/main.ts`, as `deno task start` runs
 * it) on free ports, all with the same config file and JWT secret, each with
 * a data folder of its own (its own embedded ledger unless `env` names one).
 */
export async function startProcesses(
  n: number,
  raw: Record<string, unknown>,
  env: Record<string, string> = {},
): Promise<GatewayProcesses> {
  const dir = await Deno.makeTempDir();
  const secret = crypto.randomUUID() + crypto.randomUUID();
  await Deno.writeTextFile(`${dir}/gateway.json`, JSON.stringify(raw));
  const stdout: string[] = [];
  const running = Array.from({ length: n }, (_, i) =>
    spawn(
      {
        PORT: "0",
        GATEWAY_CONFIG: `${dir}/gateway.json`,
        DATA_DIR: `${dir}/p${i}`,
        JWT_SECRET: secret,
        ...env,
      },
      stdout,
      i,
    ));

  let stopping: Promise<Deno.CommandStatus[]> | undefined;
  const stop = () => stopping ??= halt();
  async function halt() {
    for (const r of running) {
      try {
        r.child.kill("SIGTERM");
      } catch { /* already exited */ }
    }
    const statuses = await Promise.all(running.map((r) => r.child.status));
    await Promise.all(running.map((r) => r.drained));
    await Deno.remove(dir, { recursive: true });
    return statuses;
  }

  let urls: string[];
  try {
    urls = await Promise.all(running.map((r) => r.url));
  } catch (err) {
    await stop();
    throw err;
  }
  const config = buildConfigSchema({}).parse({ ...raw, auth: { jwt_secret: secret } });
  const tokens = createTokenService({
    auth: config.auth,
    secret: new TextEncoder().encode(secret),
    revocations: new RevocationList(systemClock),
    clock: systemClock,
  });
  return {
    urls,
    stdout,
    token: async ({ tenant, user, mode }) =>
      (await tokens.mint({
        user_id: user,
        tenant_id: tenant,
        roles: ["user"],
        mode,
        ttl_s: 600,
      })).token,
    stop,
  };
}
