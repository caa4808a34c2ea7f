import type { AppDeps } from "../../src/app.ts";
import { createRuntime, type Runtime, type RuntimeOverrides } from "../../src/compose.ts";
import { buildConfigSchema, type Config, type Env } from "../../src/config.ts";
import { type DbKind, freshPostgres } from "./db.ts";
import type { UsageEvent } from "../../src/metering/usage_event.ts";

/**
 * A config for tests: an edge with the demo provider, no delays. Its usage
 * events are collected by the test (see startGateway) rather than batched to
 * an aggregator; aggregator tests set `role` and a database themselves.
 */
export function testConfig(raw: Record<string, unknown> = {}, env: Env = {}): Config {
  return buildConfigSchema(env).parse({
    role: "edge",
    auth: { jwt_secret: "test-secret-that-is-long-enough-for-hs256" },
    metering: { aggregator_url: "http://127.0.0.1:9", secret: "test-metering-secret" },
    providers: { demo: { protocol: "mock" } },
    models: {
      "convergio-demo": {
        deployments: [{ provider: "demo", model: "demo-large" }],
        price: { input_per_1m: 2, output_per_1m: 8 },
      },
    },
    ...raw,
  });
}

export interface TestGateway {
  url: string;
  deps: AppDeps;
  runtime: Runtime;
  logs: Array<Record<string, unknown>>;
  /** Usage events of an edge gateway, when the test collects them. */
  events: UsageEvent[];
  token(
    claims?: Partial<
      {
        tenant: string;
        user: string;
        mode: "byok" | "managed";
        roles: Array<"admin" | "tenant_admin" | "user">;
      }
    >,
  ): Promise<string>;
  close(): Promise<void>;
}

/**
 * Starts the real app on a free loopback port. Edge-only configs collect
 * usage events in `events`; other roles run their real metering path.
 */
export async function startGateway(
  config: Config = testConfig(),
  overrides: RuntimeOverrides = {},
): Promise<TestGateway> {
  const logs: Array<Record<string, unknown>> = [];
  const events: UsageEvent[] = [];
  const runtime = await createRuntime(config, {
    logSink: (line) => logs.push(JSON.parse(line)),
    ...(config.role === "edge" ? { meter: (e: UsageEvent) => events.push(e) } : {}),
    ...overrides,
  });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, runtime.app.fetch);
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    deps: runtime.deps,
    runtime,
    logs,
    events,
    token: async (c = {}) =>
      (await runtime.deps.tokens.mint({
        user_id: c.user ?? "u1",
        tenant_id: c.tenant ?? "t1",
        roles: c.roles ?? ["user"],
        mode: c.mode ?? "byok",
        ttl_s: 600,
      })).token,
    close: async () => {
      await server.shutdown();
      await runtime.close();
    },
  };
}

/** Reads an SSE body into its data payloads (and event names, when present). */
export async function readSse(res: Response): Promise<Array<{ event?: string; data: string }>> {
  const text = await res.text();
  return text.split("\n\n").filter((block) => block.trim()).map((block) => {
    const out: { event?: string; data: string } = { data: "" };
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) out.event = line.slice(6).trim();
      if (line.startsWith("data:")) out.data += line.slice(5).trim();
    }
    return out;
  });
}

/**
 * Runs `fn` against a full gateway (edge and aggregator in one process) on a
 * fresh ledger: a new database on the real Postgres, or embedded PGlite. The
 * gateway, database and data folder are removed afterwards.
 */
export async function withFullGateway(
  raw: Record<string, unknown>,
  fn: (gw: TestGateway) => Promise<void>,
  kind: DbKind = "postgres",
): Promise<void> {
  const dataDir = await Deno.makeTempDir({ prefix: "cvg-full-" });
  const pg = kind === "postgres" ? await freshPostgres() : undefined;
  let gw: TestGateway | undefined;
  try {
    gw = await startGateway(testConfig({
      role: "all",
      data_dir: dataDir,
      ...(pg ? { database_url: pg.url } : {}),
      ...raw,
      metering: {
        secret: "test-metering-secret",
        shutdown_flush_ms: 2_000,
        ...raw.metering as object,
      },
    }));
    await fn(gw);
  } finally {
    await gw?.close();
    await pg?.drop();
    await Deno.remove(dataDir, { recursive: true });
  }
}
