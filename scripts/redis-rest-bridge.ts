/**
 * A small Upstash-REST-compatible bridge in front of a real Redis, for local
 * development and tests (production self-hosting uses serverless-redis-http;
 * see infra/redis/README.md). It serves what `@upstash/redis` sends:
 *   POST /             one command as a JSON array
 *   POST /pipeline     an array of commands, one result or error each
 *   POST /multi-exec   the same, inside MULTI/EXEC
 * with `Authorization: Bearer <token>`, the `Upstash-Encoding: base64`
 * response encoding, and errors as `{"error": "..."}`.
 *   BRIDGE_HOST (127.0.0.1), BRIDGE_PORT (8079), BRIDGE_TOKEN (required),
 *   REDIS_URL (redis://127.0.0.1:6379)
 */
import { createClient } from "redis";

type Reply = string | number | null | Reply[];

export interface BridgeOptions {
  hostname?: string;
  port: number;
  token: string;
  redisUrl: string;
}

function encodeBase64(text: string): string {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

/** Upstash's base64 mode encodes every string but a top-level "OK". */
function encodeReply(reply: Reply, top: boolean): Reply {
  if (typeof reply === "string") return top && reply === "OK" ? reply : encodeBase64(reply);
  if (Array.isArray(reply)) return reply.map((r) => encodeReply(r, false));
  return reply;
}

function isCommand(value: unknown): value is Array<string | number> {
  return Array.isArray(value) && value.length > 0 &&
    value.every((v) => typeof v === "string" || typeof v === "number");
}

function timingSafeEqual(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}

const errorText = (err: unknown) => err instanceof Error ? err.message : String(err);

/** Starts the bridge once Redis answers (or after a short wait, serving errors until it does). */
export async function startBridge(opts: BridgeOptions) {
  const redis = createClient({
    url: opts.redisUrl,
    // Fail fast while Redis is down, so callers apply their outage policy at
    // once instead of queueing; reconnect in the background.
    disableOfflineQueue: true,
    socket: { connectTimeout: 1000, reconnectStrategy: (n: number) => Math.min(n * 100, 1000) },
  });
  redis.on("error", () => {});
  await Promise.race([
    redis.connect().catch(() => {}),
    new Promise((resolve) => setTimeout(resolve, 2000)),
  ]);

  const run = (cmd: Array<string | number>) => redis.sendCommand(cmd.map(String)) as Promise<Reply>;

  /** Pipelines are not atomic: each command succeeds or fails on its own. */
  async function pipeline(commands: Array<Array<string | number>>) {
    const settled = await Promise.allSettled(commands.map(run));
    return settled.map((s) =>
      s.status === "fulfilled" ? { result: s.value } : { error: errorText(s.reason) }
    );
  }

  async function multiExec(commands: Array<Array<string | number>>) {
    const tx = redis.multi();
    for (const cmd of commands) tx.addCommand(cmd.map(String));
    try {
      return (await tx.exec() as unknown as Reply[]).map((result) => ({ result }));
    } catch (err) {
      const failed = err as { replies?: unknown[]; errorIndexes?: number[] };
      if (!failed.replies || !failed.errorIndexes) throw err;
      return failed.replies.map((reply, i) =>
        failed.errorIndexes!.includes(i) ? { error: errorText(reply) } : { result: reply as Reply }
      );
    }
  }

  /** HTTP round trips served, so benchmarks can count what a caller costs. */
  let roundTrips = 0;
  const server = Deno.serve(
    { hostname: opts.hostname ?? "127.0.0.1", port: opts.port, onListen() {} },
    async (req) => {
      roundTrips++;
      const auth = req.headers.get("authorization") ?? "";
      if (!timingSafeEqual(auth, `Bearer ${opts.token}`)) {
        return Response.json({ error: "Unauthorized" }, { status: 401 });
      }
      if (req.method !== "POST") return Response.json({ error: "use POST" }, { status: 405 });
      const base64 = req.headers.get("upstash-encoding")?.toLowerCase() === "base64";
      const path = new URL(req.url).pathname;
      let body: unknown;
      try {
        body = await req.json();
      } catch {
        return Response.json({ error: "ERR request body is not JSON" }, { status: 400 });
      }
      try {
        if (path === "/pipeline" || path === "/multi-exec") {
          if (!Array.isArray(body) || body.length === 0 || !body.every(isCommand)) {
            return Response.json({ error: "ERR expected an array of commands" }, { status: 400 });
          }
          const results: Array<{ result: Reply } | { error: string }> = path === "/pipeline"
            ? await pipeline(body)
            : await multiExec(body);
          return Response.json(
            base64
              ? results.map((r) => "error" in r ? r : { result: encodeReply(r.result, true) })
              : results,
          );
        }
        if (path !== "/") return Response.json({ error: "ERR unknown path" }, { status: 404 });
        if (!isCommand(body)) {
          return Response.json({ error: "ERR expected a command array" }, { status: 400 });
        }
        const result = await run(body);
        return Response.json({ result: base64 ? encodeReply(result, true) : result });
      } catch (err) {
        return Response.json({ error: errorText(err) }, { status: 400 });
      }
    },
  );

  return {
    url: `http://${server.addr.hostname}:${server.addr.port}`,
    roundTrips: () => roundTrips,
    async close() {
      await server.shutdown();
      await redis.close().catch(() => {});
    },
  };
}

if (import.meta.main) {
  const token = Deno.env.get("BRIDGE_TOKEN");
  if (!token) {
    console.error("redis-bridge: set BRIDGE_TOKEN (the token clients send as REDIS_REST_TOKEN)");
    Deno.exit(2);
  }
  const bridge = await startBridge({
    hostname: Deno.env.get("BRIDGE_HOST") ?? "127.0.0.1",
    port: Number(Deno.env.get("BRIDGE_PORT") ?? 8079),
    token,
    redisUrl: Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:6379",
  });
  console.log(`redis REST bridge on ${bridge.url}`);
}
