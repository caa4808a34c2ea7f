/**
 * WebSocket load check, loopback only, gateway in its own process:
 *  - chat: N concurrent /v1/ws sessions, one chat.start each, against the demo
 *    provider with a known first-token delay; first-token latency P50/P95/P99,
 *    the gateway's added time over the provider's own delay, and server memory
 *    per open session (RSS of the gateway process, from /proc);
 *  - voice: M concurrent /v1/voice/ws sessions streaming real-time PCM16
 *    (20 ms chunks at 16 kHz); connect P95 and dropouts.
 *   deno task bench:ws [--sessions 1000] [--voice 100] [--voice-seconds 3]
 */
import { parseArgs } from "node:util";
import { benchToken, percentiles, spawnGateway } from "./support.ts";

const PROVIDER_FIRST_TOKEN_MS = 50;

async function rssBytes(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

interface Client {
  ws: WebSocket;
  frames: Array<Record<string, unknown>>;
  wait(
    pred: (f: Record<string, unknown>) => boolean,
    ms?: number,
  ): Promise<Record<string, unknown>>;
}

function connect(url: string, token: string): Promise<Client & { connectMs: number }> {
  const started = performance.now();
  const ws = new WebSocket(url, ["convergio.v1", `bearer.${token}`]);
  const frames: Array<Record<string, unknown>> = [];
  const waiters: Array<
    { pred: (f: Record<string, unknown>) => boolean; resolve: (f: Record<string, unknown>) => void }
  > = [];
  ws.onmessage = (m) => {
    const f = JSON.parse(m.data);
    frames.push(f);
    for (const w of [...waiters]) {
      if (w.pred(f)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(f);
      }
    }
  };
  const wait = (pred: (f: Record<string, unknown>) => boolean, ms = 60_000) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const found = frames.find(pred);
      if (found) return resolve(found);
      const timer = setTimeout(() => reject(new Error("timed out waiting for a frame")), ms);
      waiters.push({ pred, resolve: (f) => (clearTimeout(timer), resolve(f)) });
    });
  return new Promise((resolve, reject) => {
    ws.onerror = () => reject(new Error("connect failed"));
    wait((f) => f.type === "session.ready").then(() =>
      resolve({ ws, frames, wait, connectMs: performance.now() - started })
    ).catch(reject);
  });
}

export async function run(args: string[]): Promise<string> {
  const { values } = parseArgs({
    args,
    options: {
      sessions: { type: "string", default: "1000" },
      voice: { type: "string", default: "100" },
      "voice-seconds": { type: "string", default: "3" },
    },
  });
  const sessions = Number(values.sessions);
  const voiceSessions = Number(values.voice);
  const voiceSeconds = Number(values["voice-seconds"]);
  const dir = await Deno.makeTempDir();
  const secret = crypto.randomUUID();
  const raw = {
    providers: {
      demo: { protocol: "mock", first_token_ms: PROVIDER_FIRST_TOKEN_MS, inter_token_ms: 5 },
      "demo-voice": { protocol: "realtime_mock", first_audio_ms: 50 },
    },
    models: {
      "convergio-demo": {
        deployments: [{ provider: "demo", model: "m" }],
        price: { input_per_1m: 1, output_per_1m: 1 },
      },
      "convergio-voice": {
        deployments: [{ provider: "demo-voice", model: "rt" }],
        price: { input_per_1m: 1, output_per_1m: 1 },
      },
    },
    tenant_defaults: { rpm: 100_000_000, tpm: 100_000_000_000 },
    ws: { max_inflight: 4 },
  };
  await Deno.writeTextFile(`${dir}/gateway.json`, JSON.stringify(raw));
  const token = await benchToken(secret);
  const gw = await spawnGateway({
    GATEWAY_CONFIG: `${dir}/gateway.json`,
    JWT_SECRET: secret,
    DATA_DIR: dir,
    LOG_LEVEL: "warn",
  });
  const clients: Client[] = [];
  try {
    const base = gw.url.replace("http", "ws");
    const rssBase = await rssBytes(gw.pid);
    // Open in waves so the accept queue is not the thing measured.
    for (let i = 0; i < sessions; i += 100) {
      clients.push(
        ...await Promise.all(
          Array.from(
            { length: Math.min(100, sessions - i) },
            () => connect(`${base}/v1/ws`, token),
          ),
        ),
      );
    }
    const rssOpen = await rssBytes(gw.pid);
    const ttft = await Promise.all(clients.map(async (c, i) => {
      const t0 = performance.now();
      c.ws.send(JSON.stringify({ type: "chat.start", request_id: `r${i}`, prompt: "hello" }));
      await c.wait((f) => f.type === "chat.token");
      const first = performance.now() - t0;
      await c.wait((f) => f.type === "chat.complete" || f.type === "error");
      return first;
    }));
    const chatErrors = clients.filter((c) => c.frames.some((f) => f.type === "error")).length;
    for (const c of clients) c.ws.close(1000);
    clients.length = 0;

    const chunk = btoa(String.fromCharCode(...new Uint8Array(640)));
    let dropouts = 0;
    const connectMs: number[] = [];
    const voice = await Promise.all(Array.from({ length: voiceSessions }, async (_, i) => {
      const c = await connect(`${base}/v1/voice/ws`, token);
      connectMs.push(c.connectMs);
      c.ws.addEventListener("close", (e) => {
        if (e.code !== 1000) dropouts++;
      });
      c.ws.send(JSON.stringify({
        type: "voice.start",
        request_id: `v${i}`,
        codec: "pcm16",
        sample_rate: 16000,
        mode: "push-to-talk",
      }));
      await c.wait((f) => f.type === "voice.ready");
      for (let k = 0; k < voiceSeconds * 50; k++) {
        c.ws.send(
          JSON.stringify({ type: "voice.chunk", request_id: `v${i}`, bytes_base64: chunk }),
        );
        await new Promise((r) => setTimeout(r, 20));
      }
      c.ws.send(JSON.stringify({ type: "voice.stop", request_id: `v${i}` }));
      const done = await c.wait((f) => f.type === "voice.complete" || f.type === "error");
      c.ws.close(1000);
      return done;
    }));
    const voiceOk = voice.filter((f) => f.type === "voice.complete").length;
    const t = percentiles(ttft);
    const cm = percentiles(connectMs);
    const f = (x: number) => x.toFixed(1);
    return [
      `WebSocket load, gateway in its own process, demo provider first token ${PROVIDER_FIRST_TOKEN_MS} ms`,
      `| chat sessions | first token p50 ms | p95 ms | p99 ms | gateway-added p50 ms | p95 ms | errors | server memory per open session |`,
      `|---|---|---|---|---|---|---|---|`,
      `| ${sessions} | ${f(t.p50)} | ${f(t.p95)} | ${f(t.p99)} | ${
        f(t.p50 - PROVIDER_FIRST_TOKEN_MS)
      } | ${f(t.p95 - PROVIDER_FIRST_TOKEN_MS)} | ${chatErrors} | ${
        ((rssOpen - rssBase) / sessions / 1024).toFixed(1)
      } KiB |`,
      ``,
      `| voice sessions | seconds of real-time PCM each | connect p50 ms | connect p95 ms | completed | dropouts |`,
      `|---|---|---|---|---|---|`,
      `| ${voiceSessions} | ${voiceSeconds} | ${f(cm.p50)} | ${
        f(cm.p95)
      } | ${voiceOk} | ${dropouts} |`,
    ].join("\n");
  } finally {
    for (const c of clients) c.ws.close(1000);
    await gw.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) console.log(await run(Deno.args));
