/**
 * Measures the gateway's added latency per non-streamed request: sequential
 * requests over one keep-alive connection, straight to an OpenAI-wire mock
 * upstream and through the gateway (in its own process) to the same mock, in
 * one run. Loopback only; stops every process it started.
 *   deno task bench:latency [--requests 2000] [--warmup 200]
 */
import { parseArgs } from "node:util";
import { benchToken, spawnGateway, timeSequential } from "./support.ts";
import { startMockUpstream } from "./mock_upstream.ts";

function measure(url: string, headers: Record<string, string>, n: number, warmup: number) {
  const body = JSON.stringify({ model: "bench", messages: [{ role: "user", content: "hello" }] });
  return timeSequential(n, warmup, async () => {
    const res = await fetch(url, { method: "POST", headers, body });
    await res.arrayBuffer();
    if (!res.ok) throw new Error(`${url} answered ${res.status}`);
  });
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
  const gateway = await spawnGateway({
    GATEWAY_CONFIG: `${dir}/gateway.json`,
    DATA_DIR: dir,
    JWT_SECRET: secret,
  });
  try {
    const gatewayUrl = gateway.url;
    const token = await benchToken(secret, "managed");
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
    await gateway.stop();
    await upstream.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) console.log(await run(Deno.args));
