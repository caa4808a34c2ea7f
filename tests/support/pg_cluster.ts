/**
 * A private, throwaway PostgreSQL server. Unlike the shared server in db.ts,
 * a test may really stop and restart it, e.g. to see the gateway through a
 * database outage.
 */

export interface PgCluster {
  /** postgres://postgres@127.0.0.1:<port>/postgres */
  url: string;
  port: number;
  dataDir: string;
  /** Stops the server (pg_ctl stop -m fast), waits until it no longer accepts connections. */
  stop(): Promise<void>;
  /** Starts it again on the same port, waits until pg_isready succeeds. */
  start(): Promise<void>;
  /** Stops if running and deletes the data directory. */
  destroy(): Promise<void>;
}

interface Output {
  code: number;
  text: string;
}

const READY_TIMEOUT_MS = 10_000;

async function run(cmd: string, args: string[]): Promise<Output> {
  // The postgres user may not be allowed into the caller's working directory.
  const out = await new Deno.Command(cmd, { args, cwd: "/", stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { code: out.code, text };
}

/** initdb and postgres refuse to run as root, so as root they run as the postgres OS user. */
function runAsPostgres(cmd: string, args: string[]): Promise<Output> {
  return Deno.uid() === 0 ? run("runuser", ["-u", "postgres", "--", cmd, ...args]) : run(cmd, args);
}

/** PG_BIN, or the bin folder of the newest version under /usr/lib/postgresql. */
async function binDir(): Promise<string> {
  const override = Deno.env.get("PG_BIN");
  if (override) return override;
  const root = "/usr/lib/postgresql";
  const versions: number[] = [];
  for await (const entry of Deno.readDir(root)) {
    if (/^\d+(\.\d+)?$/.test(entry.name)) versions.push(Number(entry.name));
  }
  if (versions.length === 0) throw new Error(`no PostgreSQL under ${root}; set PG_BIN`);
  return `${root}/${Math.max(...versions)}/bin`;
}

/** Lets the OS pick a port; another process could grab it before postgres does, rare enough. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

async function logTail(dataDir: string, lines = 20): Promise<string> {
  const log = await Deno.readTextFile(`${dataDir}/server.log`).catch(() => "(no server.log)");
  return log.trimEnd().split("\n").slice(-lines).join("\n");
}

function serverConf(port: number, extraConf: string): string {
  return [
    "",
    "listen_addresses = '127.0.0.1'",
    `port = ${port}`,
    // No unix socket: nothing to clash with the shared server, no path-length limit.
    "unix_socket_directories = ''",
    "fsync = off",
    extraConf,
    "",
  ].join("\n");
}

/** initdb, configured for a fast throwaway server reachable only over TCP on `port`. */
async function initCluster(bin: string, dataDir: string, port: number, extraConf: string) {
  if (Deno.uid() === 0) {
    const chown = await run("chown", ["-R", "postgres:postgres", dataDir]);
    if (chown.code !== 0) throw new Error(`chown ${dataDir} failed: ${chown.text}`);
  }
  await Deno.chmod(dataDir, 0o700);
  // C locale for speed and stable sorting; UTF8 since the C locale would default to SQL_ASCII.
  const init = await runAsPostgres(`${bin}/initdb`, [
    ...["-D", dataDir, "-A", "trust", "-U", "postgres", "--no-sync"],
    ...["--locale=C", "-E", "UTF8"],
  ]);
  if (init.code !== 0) throw new Error(`initdb failed: ${init.text}`);
  await Deno.writeTextFile(`${dataDir}/postgresql.conf`, serverConf(port, extraConf), {
    append: true,
  });
}

/** Starts a fresh cluster on a free port; `extraConf` is appended to postgresql.conf. */
export async function startPgCluster(opts: { extraConf?: string } = {}): Promise<PgCluster> {
  const bin = await binDir();
  const port = freePort();
  const dataDir = await Deno.makeTempDir({ prefix: "cvg-pg-" });

  const pgCtl = async (...args: string[]) => {
    const out = await runAsPostgres(`${bin}/pg_ctl`, [...args, "-w", "-D", dataDir]);
    if (out.code !== 0) await fail(`pg_ctl ${args[0]} failed: ${out.text}`);
  };
  const fail = async (message: string): Promise<never> => {
    throw new Error(`${message}\n--- server.log (tail) ---\n${await logTail(dataDir)}`);
  };
  // pg_ctl -w watches postmaster.pid; pg_isready shows what a TCP client really sees.
  const awaitReady = async (want: boolean) => {
    const args = ["-q", "-h", "127.0.0.1", "-p", String(port), "-t", "1"];
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (((await run(`${bin}/pg_isready`, args)).code === 0) !== want) {
      if (Date.now() > deadline) {
        await fail(`postgres on port ${port} still ${want ? "not ready" : "accepting"}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const isRunning = async () =>
    (await runAsPostgres(`${bin}/pg_ctl`, ["status", "-D", dataDir])).code === 0;

  const cluster: PgCluster = {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    dataDir,
    async stop() {
      await pgCtl("stop", "-m", "fast");
      await awaitReady(false);
    },
    async start() {
      await pgCtl("start", "-l", `${dataDir}/server.log`);
      await awaitReady(true);
    },
    async destroy() {
      if (await isRunning()) await cluster.stop();
      await Deno.remove(dataDir, { recursive: true });
    },
  };

  try {
    await initCluster(bin, dataDir, port, opts.extraConf ?? "");
    await cluster.start();
  } catch (error) {
    await cluster.destroy().catch(() => {});
    throw error;
  }
  return cluster;
}
