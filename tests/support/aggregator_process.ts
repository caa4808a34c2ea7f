/**
 * Single real gateway processes (`src/main.ts`) with an env of their own, for
 * fault tests: an aggregator that can be SIGKILLed and restarted on the same
 * port, and edges that can be stopped and started again on the same data folder.
 */
import { RevocationList } from "../../src/auth/revocation.ts";
import { createTokenService } from "../../src/auth/tokens.ts";
import { systemClock } from "../../src/clock.ts";
import { buildConfigSchema, type Mode } from "../../src/config.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
/** Longest a process may take to print its banner (first runs type-check nothing, but boot migrations). */
const BOOT_TIMEOUT_MS = 60_000;

export interface GatewayProcess {
  /** `http://127.0.0.1:<port>`, from the banner. */
  url: string;
  /** Everything written so far. */
  readonly stdout: string;
  readonly stderr: string;
  /** False once the process has exited. */
  readonly running: boolean;
  /** Sends a signal; a no-op once the process has exited. */
  kill(signal: Deno.Signal): void;
  /** Resolves once the process has exited and its pipes are drained. */
  exited: Promise<Deno.CommandStatus>;
  /** SIGTERM (graceful: the edge flushes its spool), then waits for the exit. */
  stop(): Promise<Deno.CommandStatus>;
}

/** A port that was free a moment ago, so a process can be restarted on it. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

function spawnOnce(env: Record<string, string>): {
  ready: Promise<string>;
  proc: GatewayProcess;
} {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-env", "--allow-read", "--allow-write", "src/main.ts"],
    cwd: ROOT,
    env: { DENO_COVERAGE_DIR: "coverage", ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let stdout = "";
  let stderr = "";
  const { promise: ready, resolve, reject } = Promise.withResolvers<string>();
  const err = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) stderr += chunk;
  })();
  const out = (async () => {
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      stdout += chunk;
      const found = /listening on (http:\/\/[\d.]+:\d+)/.exec(stdout)?.[1];
      if (found) resolve(found);
    }
  })();
  const exited = (async () => {
    const status = await child.status;
    await Promise.all([out, err]);
    reject(
      new Error(`gateway exited (code ${status.code}) before listening:\n${stdout}\n${stderr}`),
    );
    return status;
  })();
  let done = false;
  exited.finally(() => (done = true));
  const kill = (signal: Deno.Signal) => {
    if (done) return;
    try {
      child.kill(signal);
    } catch { /* already exited */ }
  };
  const proc: GatewayProcess = {
    url: "",
    get stdout() {
      return stdout;
    },
    get stderr() {
      return stderr;
    },
    get running() {
      return !done;
    },
    kill,
    exited,
    stop() {
      kill("SIGTERM");
      return exited;
    },
  };
  return { ready, proc };
}

/**
 * Spawns one gateway process and waits for its banner. On a fixed port taken
 * a moment ago by a killed process, retries a few times while the port frees.
 */
export async function spawnGateway(env: Record<string, string>): Promise<GatewayProcess> {
  for (let attempt = 1;; attempt++) {
    const { ready, proc } = spawnOnce(env);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`gateway did not listen within ${BOOT_TIMEOUT_MS} ms`)),
        BOOT_TIMEOUT_MS,
      );
    });
    try {
      proc.url = await Promise.race([ready, timeout]);
      return proc;
    } catch (err) {
      proc.kill("SIGKILL");
      await proc.exited;
      const addrInUse = /AddrInUse|address already in use/i.test(proc.stderr + proc.stdout);
      if (!addrInUse || attempt >= 10) throw err;
      await new Promise((r) => setTimeout(r, 200));
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Mints tokens the processes accept, given the JWT_SECRET they run with. */
export function tokenMinter(raw: Record<string, unknown>, jwtSecret: string) {
  const config = buildConfigSchema({}).parse({ ...raw, auth: { jwt_secret: jwtSecret } });
  const tokens = createTokenService({
    auth: config.auth,
    secret: new TextEncoder().encode(jwtSecret),
    revocations: new RevocationList(systemClock),
    clock: systemClock,
  });
  return async (claims: { tenant: string; user: string; mode: Mode }) =>
    (await tokens.mint({
      user_id: claims.user,
      tenant_id: claims.tenant,
      roles: ["user"],
      mode: claims.mode,
      ttl_s: 600,
    })).token;
}
