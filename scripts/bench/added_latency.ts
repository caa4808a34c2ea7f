/**
 * Measures the gateway's added latency per non-streamed request: sequential
 * requests over one keep-alive connection, straight to an OpenAI-wire mock
 * upstream and through the gateway (in its own process) to the same mock, in
 * one run. Loopback only; stops every process it started.
 *   deno task bench:latency [--requests 2000] [--warmup 200]
 */
import { parseArgs } from "node:util";
import { createTokenService } from "../../src/auth/tokens.ts";
import { RevocationList } from "../../src/auth/revocation.ts";
import { systemClock } from "../../src/clock.ts";
import { buildConfigSchema } from "../../src/config.ts";
import { startMockUpstream } from "./mock_upstream.ts";

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

async function measure(url: string, headers: Record<string, string>, n: number, warmup: number) {
  const body = JSON.stringify({ model: "bench", messages: [{ role: "user", content: "hello" }] });
  const samples: number[] = [];
  for (let i = 0; i < warmup + n; i++) {
    const t0 = performance.now();
    const res = await fetch(url, { method: "POST", headers, body });
    await res.arrayBuffer();
    if (!res.ok) throw new Error(`${url} answered ${res.status}`);
    if (i >= warmup) samples.push(performance.now() - t0);
  }
  return percentiles(samples);
}

async function waitForListen(child: Deno.ChildProcess): Promise<string> {
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
      return url;
    }
  }
}

export async function run(args: string[]): Promise<string> {
  const { values } = parseArgs({
    args,
    options: {
      requests: { type: "string", default: "2000" },
      warmup: { type: "string", default: "200" },
    },
  });
  const n = Number(values.requests);
  const warmup = Number(values.warmup);
  const upstream = startMockUpstream({ port: 0, chunks: 20, chunkMs: 0, latencyMs: 0 });
  const upstreamUrl = `http://127.0.0.1:${upstream.addr.port}`;
  const dir = await Deno.makeTempDir();
  const secret = crypto.randomUUID() + crypto.randomUUID();
  const raw = {
    providers: { mock: { protocol: "openai", base_url: `${upstreamUrl}/v1`, api_key: "bench" } },
    models: {
      bench: {
        deployments: [{ provider: "mock", model: "bench" }],
        price: { input_per_1m: 1, output_per_1m: 2 },
      },
    },
  };
  await Deno.writeTextFile(`${dir}/gateway.json`, JSON.stringify(raw));
  const gateway = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-env", "--allow-read", "--allow-write", "src/main.ts"],
    env: { GATEWAY_CONFIG: `${dir}/gateway.json`, PORT: "0", DATA_DIR: dir, JWT_SECRET: secret },
    stdout: "piped",
    stderr: "null",
  }).spawn();
  try {
    const gatewayUrl = await waitForListen(gateway);
    const config = buildConfigSchema({}).parse({ ...raw, auth: { jwt_secret: secret } });
    const tokens = createTokenService({
      auth: config.auth,
      secret: new TextEncoder().encode(secret),
      revocations: new RevocationList(systemClock),
      clock: systemClock,
    });
    const { token } = await tokens.mint({
      user_id: "bench",
      tenant_id: "bench",
      roles: ["user"],
      mode: "managed",
      ttl_s: 3600,
    });
    const json = { "content-type": "application/json" };
    const direct = await measure(`${upstreamUrl}/v1/chat/completions`, json, n, warmup);
    const via = await measure(
      `${gatewayUrl}/v1/chat/completions`,
      { ...json, authorization: `Bearer ${token}` },
      n,
      warmup,
    );
    const f = (ms: number) => ms.toFixed(3);
    return [
      `non-streamed, sequential, ${n} requests after ${warmup} warm-up, one keep-alive connection`,
      `| target | p50 ms | p99 ms | mean ms |`,
      `|---|---|---|---|`,
      `| direct to mock | ${f(direct.p50)} | ${f(direct.p99)} | ${f(direct.mean)} |`,
      `| through gateway | ${f(via.p50)} | ${f(via.p99)} | ${f(via.mean)} |`,
      `| added | ${f(via.p50 - direct.p50)} | ${f(via.p99 - direct.p99)} | ${
        f(via.mean - direct.mean)
      } |`,
    ].join("\n");
  } finally {
    gateway.kill("SIGTERM");
    await gateway.status;
    await upstream.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) console.log(await run(Deno.args));
