/**
 * Budget guard benchmark: Redis round trips per admitted request, and the
 * added latency per request of the memory and Redis stores against no guard.
 * In one run, sequentially, on loopback: "none" calls the router directly;
 * "memory" and "redis" go through the chat service, guard included. The Redis
 * store talks to the real Redis on 127.0.0.1:6379 through the REST bridge.
 *   deno task bench:budget [--requests 2000] [--warmup 200]
 */
import { parseArgs } from "node:util";
import { ROOT_CONTEXT } from "@opentelemetry/api";
import type { Principal } from "../../src/auth/principal.ts";
import { createChatService } from "../../src/api/chat_service.ts";
import { RedisBudgetStore } from "../../src/budget/redis_store.ts";
import { createRuntime, type Runtime } from "../../src/compose.ts";
import { buildConfigSchema } from "../../src/config.ts";
import { RequestRecord } from "../../src/obs/request_record.ts";
import { startBridge } from "../redis-rest-bridge.ts";
import { timeSequential } from "./support.ts";

const principal: Principal = {
  user_id: "bench",
  tenant_id: "bench",
  roles: ["user"],
  mode: "managed",
};
const request = { model: "bench", messages: [{ role: "user" as const, content: "hello" }] };

export async function run(args: string[]): Promise<string> {
  const { values } = parseArgs({
    args,
    options: {
      requests: { type: "string", default: "2000" },
      warmup: { type: "string", default: "200" },
      "redis-url": { type: "string", default: "redis://127.0.0.1:6379" },
    },
  });
  const n = Number(values.requests);
  const warmup = Number(values.warmup);
  const token = crypto.randomUUID();
  const bridge = await startBridge({ port: 0, token, redisUrl: values["redis-url"]! });
  const prefix = `bench:${crypto.randomUUID()}`;
  const config = buildConfigSchema({}).parse({
    auth: { jwt_secret: token },
    providers: { demo: { protocol: "mock" } },
    models: {
      bench: {
        deployments: [{ provider: "demo", model: "m" }],
        price: { input_per_1m: 1, output_per_1m: 1 },
      },
    },
    tenant_defaults: {
      rpm: 10_000_000,
      tpm: 10_000_000_000,
      daily_budget_usd: 1e6,
      monthly_budget_usd: 1e6,
    },
    guardrails: { global_daily_cap_usd: 0, redis: { url: bridge.url, token, prefix } },
    role: "edge",
    metering: { aggregator_url: "http://127.0.0.1:9", secret: token },
  });
  const record = () => new RequestRecord("r", "POST", "/bench", 0, () => {}, () => 0);
  const runtimes: Runtime[] = [];
  const signal = new AbortController().signal;
  try {
    const quiet = { logSink: () => {}, meter: () => {} };
    const memoryRuntime = await createRuntime(config, quiet);
    const redisRuntime = await createRuntime(config, {
      ...quiet,
      store: RedisBudgetStore.fromConfig(config.guardrails.redis),
    });
    // The redis store as deployed: local admission in front of it.
    const localRuntime = await createRuntime(
      { ...config, guardrails: { ...config.guardrails, store: "redis" } },
      quiet,
    );
    runtimes.push(memoryRuntime, redisRuntime, localRuntime);
    const memory = memoryRuntime.deps.edge!;
    const redis = redisRuntime.deps.edge!;
    const local = localRuntime.deps.edge!;
    const chatMemory = createChatService({ ...memoryRuntime.deps, ...memory });
    const chatRedis = createChatService({ ...redisRuntime.deps, ...redis });
    const chatLocal = createChatService({ ...localRuntime.deps, ...local });
    const call = () => ({
      principal,
      request,
      record: record(),
      signal,
      trace: ROOT_CONTEXT,
      transport: "http" as const,
    });

    const none = await timeSequential(n, warmup, () =>
      memory.router.complete({
        alias: "bench",
        model: config.models.bench,
        request,
        mode: "managed",
        tenantId: "bench",
        signal,
      }));
    const mem = await timeSequential(n, warmup, () => chatMemory.complete(call()));
    const red = await timeSequential(n, warmup, () => chatRedis.complete(call()));
    await redis.guard.idle();
    const loc = await timeSequential(n, warmup, () => chatLocal.complete(call()));
    await local.guard.idle();

    // Round trips on the hot path: admission alone, settlement counted apart.
    const before = bridge.roundTrips();
    const admissions = [];
    for (let i = 0; i < 100; i++) {
      admissions.push(await redis.guard.admit(principal, request, "bench"));
    }
    const admitTrips = (bridge.roundTrips() - before) / 100;
    // Under load: concurrent admissions share pipelined round trips.
    const beforeBurst = bridge.roundTrips();
    const burst = await Promise.all(
      Array.from({ length: 100 }, () => redis.guard.admit(principal, request, "bench")),
    );
    const burstTrips = (bridge.roundTrips() - beforeBurst) / 100;
    admissions.push(...burst);
    const beforeSettle = bridge.roundTrips();
    for (const a of admissions) a.settle({ input_tokens: 1, output_tokens: 1 });
    await redis.guard.idle();
    const settleTrips = (bridge.roundTrips() - beforeSettle) / admissions.length;

    // Local admission: after its first answer, admissions skip the store and
    // each request is charged after its response, in one round trip.
    let localAdmitTrips = 0;
    let chargeTrips = 0;
    for (let i = 0; i < 100; i++) {
      const before = bridge.roundTrips();
      const a = await local.guard.admit(principal, request, "bench");
      const admitted = bridge.roundTrips();
      a.settle({ input_tokens: 1, output_tokens: 1 });
      await local.guard.idle();
      localAdmitTrips += (admitted - before) / 100;
      chargeTrips += (bridge.roundTrips() - admitted) / 100;
    }

    const f = (x: number) => x.toFixed(3);
    const row = (name: string, p: { p50: number; p99: number; mean: number }) =>
      `| ${name} | ${f(p.p50)} | ${f(p.p99)} | ${f(p.mean)} | ${f(p.p50 - none.p50)} |`;
    return [
      `budget guard, ${n} sequential requests after ${warmup} warm-up (demo provider, no delay)`,
      `| guard | p50 ms | p99 ms | mean ms | added p50 ms |`,
      `|---|---|---|---|---|`,
      row("none (router only)", none),
      row("memory store", mem),
      row("redis store (REST bridge)", red),
      row("redis store + local admission", loc),
      ``,
      `redis round trips per admitted request (hot path, before the provider): ${admitTrips}`,
      `redis round trips per admitted request, 100 concurrent admissions: ${burstTrips.toFixed(2)}`,
      `redis round trips per settlement (after the response, off the hot path, coalesced): ${
        settleTrips.toFixed(2)
      }`,
      `local admission: redis round trips before the provider per request: ${localAdmitTrips}, ` +
      `after the response (charges, coalesced): ${chargeTrips.toFixed(2)}`,
      `ratio p50 memory/none: ${f(mem.p50 / none.p50)}, redis/none: ${
        f(red.p50 / none.p50)
      }, redis/memory: ${f(red.p50 / mem.p50)}`,
    ].join("\n");
  } finally {
    for (const r of runtimes) await r.close();
    await bridge.close();
  }
}

if (import.meta.main) console.log(await run(Deno.args));
