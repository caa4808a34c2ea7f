/**
 * The cost of observability: requests/s and latency through the gateway with
 * metrics and tracing on (OTEL_DENO=true, spans exported over OTLP to a local
 * sink) vs off (OBSERVABILITY=off), in one run, same load, same machine. Each
 * gateway runs in its own process on loopback, demo provider without delays.
 *   deno task bench:observability [--seconds 8] [--connections 32]
 */
import { parseArgs } from "node:util";
import { benchToken, percentiles, spawnGateway } from "./support.ts";

async function load(url: string, token: string, seconds: number, connections: number) {
  const body = JSON.stringify({
    model: "convergio-demo",
    messages: [{ role: "user", content: "hello" }],
  });
  const headers = { authorization: `Bearer ${token}`, "content-type": "application/json" };
  const samples: number[] = [];
  let errors = 0;
  const deadline = performance.now() + seconds * 1000;
  const started = performance.now();
  await Promise.all(Array.from({ length: connections }, async () => {
    while (performance.now() < deadline) {
      const t0 = performance.now();
      const res = await fetch(`${url}/v1/chat/completions`, { method: "POST", headers, body });
      await res.arrayBuffer();
      if (res.ok) samples.push(performance.now() - t0);
      else errors++;
    }
  }));
  const elapsed = (performance.now() - started) / 1000;
  return { rps: samples.length / elapsed, errors, ...percentiles(samples) };
}

export async function run(args: string[]): Promise<string> {
  const { values } = parseArgs({
    args,
    options: {
      seconds: { type: "string", default: "8" },
      connections: { type: "string", default: "32" },
    },
  });
  const seconds = Number(values.seconds);
  const connections = Number(values.connections);
  let spans = 0;
  const sink = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    if (new URL(req.url).pathname === "/v1/traces") spans++;
    await req.arrayBuffer();
    return new Response(null, { status: 200 });
  });
  const dir = await Deno.makeTempDir();
  const secret = crypto.randomUUID();
  const raw = {
    providers: { demo: { protocol: "mock" } },
    models: {
      "convergio-demo": {
        deployments: [{ provider: "demo", model: "m" }],
        price: { input_per_1m: 1, output_per_1m: 1 },
      },
    },
    tenant_defaults: { rpm: 100_000_000, tpm: 100_000_000_000 },
  };
  await Deno.writeTextFile(`${dir}/gateway.json`, JSON.stringify(raw));
  const token = await benchToken(secret);
  const base = { GATEWAY_CONFIG: `${dir}/gateway.json`, JWT_SECRET: secret, LOG_LEVEL: "warn" };
  const results: Array<[string, Awaited<ReturnType<typeof load>>]> = [];
  try {
    for (
      const [name, env] of [
        ["off (OBSERVABILITY=off)", { ...base, OBSERVABILITY: "off", DATA_DIR: `${dir}/off` }],
        ["metrics only (no OTEL_DENO)", { ...base, DATA_DIR: `${dir}/metrics` }],
        ["on (metrics + OTEL_DENO tracing)", {
          ...base,
          DATA_DIR: `${dir}/on`,
          OTEL_DENO: "true",
          OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${sink.addr.port}`,
          OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf",
        }],
      ] as const
    ) {
      const gw = await spawnGateway(env);
      try {
        await load(gw.url, token, 1, connections);
        results.push([name, await load(gw.url, token, seconds, connections)]);
      } finally {
        await gw.stop();
      }
    }
  } finally {
    await sink.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
  const [off, metricsOnly, on] = results.map(([, r]) => r);
  const row = ([name, r]: (typeof results)[number]) =>
    `| ${name} | ${Math.round(r.rps)} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${r.errors} |`;
  return [
    `observability cost: ${connections} connections, ${seconds} s each, non-streamed chat, demo provider`,
    `| observability | req/s | p50 ms | p99 ms | errors |`,
    `|---|---|---|---|---|`,
    ...results.map(row),
    ``,
    `throughput on/off: ${(on.rps / off.rps).toFixed(3)}; metrics only/off: ${
      (metricsOnly.rps / off.rps).toFixed(3)
    }; added p50: ${(on.p50 - off.p50).toFixed(2)} ms; OTLP trace exports received: ${spans}`,
  ].join("\n");
}

if (import.meta.main) console.log(await run(Deno.args));
