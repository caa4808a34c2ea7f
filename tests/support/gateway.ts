import { createApp } from "../../src/app.ts";
import type { AppDeps } from "../../src/app.ts";
import { composeDeps, type ComposeOverrides } from "../../src/compose.ts";
import { buildConfigSchema, type Config, type Env } from "../../src/config.ts";

/** A config for tests: the demo provider with no delays unless the test says otherwise. */
export function testConfig(raw: Record<string, unknown> = {}, env: Env = {}): Config {
  return buildConfigSchema(env).parse({
    auth: { jwt_secret: "test-secret-that-is-long-enough-for-hs256" },
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
  logs: Array<Record<string, unknown>>;
  token(
    claims?: Partial<{ tenant: string; user: string; mode: "byok" | "managed" }>,
  ): Promise<string>;
  close(): Promise<void>;
}

/** Starts the real app on a free loopback port. */
export async function startGateway(
  config: Config = testConfig(),
  overrides: ComposeOverrides = {},
): Promise<TestGateway> {
  const logs: Array<Record<string, unknown>> = [];
  const deps = await composeDeps(config, {
    logSink: (line) => logs.push(JSON.parse(line)),
    ...overrides,
  });
  const app = createApp(deps);
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, app.fetch);
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    deps,
    logs,
    token: async (c = {}) =>
      (await deps.tokens.mint({
        user_id: c.user ?? "u1",
        tenant_id: c.tenant ?? "t1",
        roles: ["user"],
        mode: c.mode ?? "byok",
        ttl_s: 600,
      })).token,
    close: () => server.shutdown(),
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
