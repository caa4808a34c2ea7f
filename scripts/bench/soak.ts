/**
 * Memory soak: one gateway process (role all: edge and aggregator; JWT, Redis
 * budgets through the REST bridge with local admission, metering into a fresh
 * Postgres database, metrics, info logs) under steady wrk load against the
 * OpenAI-wire mock upstream, for a number of minutes. After every slice it
 * reads the process's RSS and JS heap, then reports each one's growth trend
 * (least-squares slope over the slices after the first, which warms up).
 *   deno task bench:soak [--minutes 5] [--slice 30] [--connections 20]
 *     [--pg postgres://postgres@127.0.0.1:5432/postgres] [--redis redis://127.0.0.1:6379]
 */
import { parseArgs } from "node:util";
import postgres from "postgres";
import { createClient } from "redis";
import { startBridge } from "../redis-rest-bridge.ts";
import { startMockUpstream } from "./mock_upstream.ts";
import { benchGatewayConfig, benchToken, luaScript, spawnGateway } from "./support.ts";

interface Sample {
  minute: number;
  requests: number;
  rssMiB: number;
  heapUsedMiB: number;
  heapTotalMiB: number;
}

/** Least-squares slope of y over x. */
export function slope(points: Array<[number, number]>): number {
  const n = points.length;
  const mx = points.reduce((a, [x]) => a + x, 0) / n;
  const my = points.reduce((a, [, y]) => a + y, 0) / n;
  const sxx = points.reduce((a, [x]) => a + (x - mx) ** 2, 0);
  const sxy = points.reduce((a, [x, y]) => a + (x - mx) * (y - my), 0);
  return sxx === 0 ? 0 : sxy / sxx;
}

/** The gateway's own memory gauge, as an operator's Prometheus reads it. */
async function memoryOf(url: string) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const gauge = (kind: string) =>
    Number(
      new RegExp(`^convergio_process_memory_bytes\\{kind="${kind}"\\} (\\d+)`, "m")
        .exec(text)?.[1],
    ) / 1048576;
  return {
    rssMiB: gauge("rss"),
    heapUsedMiB: gauge("heap_used"),
    heapTotalMiB: gauge("heap_total"),
  };
}

export async function run(args: string[]): Promise<string> {
  const { values } = parseArgs({
    args,
    options: {
      minutes: { type: "string", default: "5" },
      slice: { type: "string", default: "30" },
      connections: { type: "string", default: "20" },
      pg: { type: "string", default: "postgres://postgres@127.0.0.1:5432/postgres" },
      redis: { type: "string", default: "redis://127.0.0.1:6379" },
    },
  });
  const slices = Math.max(2, Math.round(Number(values.minutes) * 60 / Number(values.slice)));
  const sliceS = Number(values.slice);
  const dir = await Deno.makeTempDir({ prefix: "soak-" });
  const id = crypto.randomUUID().replaceAll("-", "").slice(0, 12);
  const admin = postgres(values.pg!, { max: 1, onnotice: () => {} });
  const dbName = `cvg_soak_${id}`;
  await admin.unsafe(`CREATE DATABASE ${dbName}`);
  const bridgeToken = crypto.randomUUID();
  const bridge = await startBridge({ port: 0, token: bridgeToken, redisUrl: values.redis! });
  const mock = startMockUpstream({ port: 0, chunks: 20, chunkMs: 0, latencyMs: 0 });
  const secret = crypto.randomUUID() + crypto.randomUUID();
  let gateway: Awaited<ReturnType<typeof spawnGateway>> | undefined;
  try {
    await Deno.writeTextFile(
      `${dir}/gateway.json`,
      JSON.stringify(benchGatewayConfig(`http://127.0.0.1:${mock.addr.port}`, `cvgsoak-${id}`)),
    );
    gateway = await spawnGateway({
      ROLE: "all",
      GATEWAY_CONFIG: `${dir}/gateway.json`,
      DATA_DIR: dir,
      DATABASE_URL: values.pg!.replace(/\/[^/]*$/, `/${dbName}`),
      METERING_SECRET: crypto.randomUUID() + crypto.randomUUID(),
      BUDGET_STORE: "redis",
      REDIS_REST_URL: bridge.url,
      REDIS_REST_TOKEN: bridgeToken,
      JWT_SECRET: secret,
      LOG_LEVEL: "info",
    });
    const token = await benchToken(secret, "managed");
    const lua = `${dir}/post.lua`;
    await Deno.writeTextFile(lua, luaScript({ Authorization: `Bearer ${token}` }));
    const samples: Sample[] = [];
    const started = performance.now();
    let requests = 0;
    for (let i = 0; i < slices; i++) {
      const out = await new Deno.Command("wrk", {
        args: [
          `-t2`,
          `-c${values.connections}`,
          `-d${sliceS}s`,
          "-s",
          lua,
          `${gateway.url}/v1/chat/completions`,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      const done = Number(/(\d+) requests in/.exec(text)?.[1]);
      if (!out.success || !(done > 0) || /Non-2xx/.test(text)) {
        throw new Error(`wrk slice ${i} failed:\n${text}${new TextDecoder().decode(out.stderr)}`);
      }
      requests += done;
      samples.push({
        minute: (performance.now() - started) / 60_000,
        requests,
        ...(await memoryOf(gateway.url)),
      });
    }
    const trend = (pick: (s: Sample) => number) =>
      slope(samples.slice(1).map((s) => [s.minute, pick(s)]));
    const f = (x: number) => x.toFixed(1);
    return [
      `soak: ${slices} slices of ${sliceS} s at ${values.connections} connections, ` +
      `${requests} requests in ${f((performance.now() - started) / 1000)} s`,
      `| minute | requests | RSS MiB | JS heap used MiB | JS heap reserved MiB |`,
      `|---|---|---|---|---|`,
      ...samples.map((s) =>
        `| ${s.minute.toFixed(2)} | ${s.requests} | ${f(s.rssMiB)} | ${f(s.heapUsedMiB)} | ${
          f(s.heapTotalMiB)
        } |`
      ),
      ``,
      `growth after the first slice (least squares, MiB per minute): RSS ${
        trend((s) => s.rssMiB).toFixed(2)
      }, JS heap used ${trend((s) => s.heapUsedMiB).toFixed(2)}, JS heap reserved ${
        trend((s) => s.heapTotalMiB).toFixed(2)
      }`,
    ].join("\n");
  } finally {
    await gateway?.stop();
    await mock.shutdown();
    await bridge.close();
    const redis = createClient({ url: values.redis! });
    await redis.connect();
    for await (const keys of redis.scanIterator({ MATCH: `cvgsoak-${id}:*`, COUNT: 100 })) {
      if (keys.length) await redis.del(keys);
    }
    await redis.close();
    await admin.unsafe(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch(() => {});
    await admin.end();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) console.log(await run(Deno.args));
