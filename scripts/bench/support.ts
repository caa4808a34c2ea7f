/** What the benchmarks share: a gateway in its own process, a token it accepts, percentiles. */
import { createTokenService } from "../../src/auth/tokens.ts";
import { RevocationList } from "../../src/auth/revocation.ts";
import { systemClock } from "../../src/clock.ts";
import { buildConfigSchema } from "../../src/config.ts";

export interface Percentiles {
  p50: number;
  p95: number;
  p99: number;
  mean: number;
}

export function percentiles(samples: number[]): Percentiles {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return {
    p50: at(0.5),
    p95: at(0.95),
    p99: at(0.99),
    mean: sorted.reduce((a, b) => a + b, 0) / sorted.length,
  };
}

/** Runs `fn` `warmup + n` times in sequence and returns percentiles of the last `n`, in ms. */
export async function timeSequential(
  n: number,
  warmup: number,
  fn: () => Promise<unknown>,
): Promise<Percentiles> {
  const samples: number[] = [];
  for (let i = 0; i < warmup + n; i++) {
    const t0 = performance.now();
    await fn();
    if (i >= warmup) samples.push(performance.now() - t0);
  }
  return percentiles(samples);
}

export interface GatewayProcess {
  url: string;
  pid: number;
  stop(): Promise<void>;
}

/** Starts `src/main.ts` as `deno task start` does, and resolves once it listens. */
export async function spawnGateway(env: Record<string, string>): Promise<GatewayProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-env", "--allow-read", "--allow-write", "src/main.ts"],
    env: { PORT: "0", ...env },
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (true) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`gateway exited before listening:\n${text}`);
    text += value;
    const url = /listening on (http:\/\/[\d.]+:\d+)/.exec(text)?.[1];
    if (url) {
      // Keep draining so the gateway never blocks on a full stdout pipe.
      (async () => {
        while (!(await reader.read()).done);
      })().catch(() => {});
      return {
        url,
        pid: child.pid,
        async stop() {
          child.kill("SIGTERM");
          await child.status;
        },
      };
    }
  }
}

/** A token the spawned gateway accepts: same HS256 secret (its JWT_SECRET). */
export async function benchToken(
  secret: string,
  mode: "byok" | "managed" = "byok",
): Promise<string> {
  const config = buildConfigSchema({}).parse({
    providers: {},
    models: {},
    auth: { jwt_secret: secret },
  });
  const { token } = await createTokenService({
    auth: config.auth,
    secret: new TextEncoder().encode(secret),
    revocations: new RevocationList(systemClock),
    clock: systemClock,
  }).mint({ user_id: "bench", tenant_id: "bench", roles: ["user"], mode, ttl_s: 3600 });
  return token;
}

/** The non-streamed request every load run sends. */
export const CHAT_BODY = JSON.stringify({
  model: "gpt-4o-mini",
  messages: [{ role: "user", content: "Say hello." }],
  max_tokens: 16,
});

const luaString = (s: string) => `[==[${s}]==]`;

/** A wrk script POSTing CHAT_BODY with `headers`, printing a RESULT line wrk's summary lacks. */
export function luaScript(headers: Record<string, string>): string {
  return [
    `wrk.method = "POST"`,
    `wrk.body = ${luaString(CHAT_BODY)}`,
    `wrk.headers["Content-Type"] = "application/json"`,
    ...Object.entries(headers).map(([k, v]) => `wrk.headers[ ${luaString(k)} ] = ${luaString(v)}`),
    `done = function(summary, latency, requests)`,
    `  local s = summary.duration / 1e6`,
    `  local e = summary.errors`,
    `  io.write(string.format("RESULT rps=%.1f requests=%d p50_ms=%.3f p99_ms=%.3f non2xx=%d errs=%d\\n",`,
    `    summary.requests / s, summary.requests, latency:percentile(50) / 1000,`,
    `    latency:percentile(99) / 1000, e.status, e.connect + e.read + e.write + e.timeout))`,
    `end`,
  ].join("\n");
}

/** The gateway config of the load benchmarks: the OpenAI-wire mock, limits that never bind. */
export function benchGatewayConfig(mockUrl: string, redisPrefix: string) {
  return {
    providers: { mock: { protocol: "openai", base_url: `${mockUrl}/v1`, api_key: "sk-mock" } },
    models: {
      "gpt-4o-mini": {
        deployments: [{ provider: "mock", model: "gpt-4o-mini" }],
        price: { input_per_1m: 0.15, output_per_1m: 0.6 },
      },
    },
    tenant_defaults: {
      rpm: 1_000_000_000,
      tpm: 1_000_000_000_000,
      daily_budget_usd: 1_000_000,
      monthly_budget_usd: 10_000_000,
    },
    guardrails: { global_daily_cap_usd: 1_000_000, redis: { prefix: redisPrefix } },
  };
}
