/**
 * Sequential streaming-latency clients for the side-by-side benchmark.
 *  - SSE: `stream: true` chat completions one after another over one keep-alive
 *    connection; per request the time from sending to the response head, the
 *    first body byte, the first content token and the end of the body.
 *  - WebSocket (`/v1/ws`): one socket, `chat.start` one after another; per
 *    request the time to the first `chat.token` and to `chat.complete`.
 * Loopback only. Every request and wait has a deadline.
 *   deno run --allow-net scripts/bench/stream_client.ts --url http://127.0.0.1:9100/v1/chat/completions
 *     [--n 200] [--warmup 20] [--header 'Name: value']...
 */
import { parseArgs } from "node:util";
import { isLoopbackUrl } from "./floor_proxy.ts";
import { type Percentiles, percentiles } from "./support.ts";

export interface StreamStats {
  n: number;
  ok: number;
  errors: number;
  firstError: string | null;
  /** SSE `data:` events (or WS token frames) in the first good response. */
  events: number | null;
  headersMs?: Percentiles;
  ttfbMs: Percentiles;
  firstContentMs?: Percentiles;
  totalMs: Percentiles;
}

export const SSE_BODY = JSON.stringify({
  model: "gpt-4o-mini",
  stream: true,
  stream_options: { include_usage: true },
  messages: [{ role: "user", content: "Say hello." }],
  max_tokens: 32,
});

interface Sample {
  err: string | null;
  events: number;
  head: number;
  ttfb: number;
  content: number;
  total: number;
}

function summarise(samples: Sample[], n: number, ws: boolean): StreamStats {
  const ok = samples.filter((s) => !s.err);
  const nan = { p50: NaN, p95: NaN, p99: NaN, mean: NaN };
  const pick = (f: (s: Sample) => number) => ok.length ? percentiles(ok.map(f)) : nan;
  return {
    n,
    ok: ok.length,
    errors: samples.length - ok.length,
    firstError: samples.find((s) => s.err)?.err ?? null,
    events: ok[0]?.events ?? null,
    ...(ws ? {} : { headersMs: pick((s) => s.head), firstContentMs: pick((s) => s.content) }),
    ttfbMs: pick((s) => s.ttfb),
    totalMs: pick((s) => s.total),
  };
}

function assertLoopback(url: string) {
  if (!isLoopbackUrl(url)) throw new Error(`refusing non-loopback url ${url}`);
}

/** Sequential SSE requests over one keep-alive connection. */
export async function measureSse(opts: {
  url: string;
  headers: Record<string, string>;
  n: number;
  warmup: number;
  body?: string;
  timeoutMs?: number;
}): Promise<StreamStats> {
  assertLoopback(opts.url);
  const client = Deno.createHttpClient({ poolMaxIdlePerHost: 1, http2: false });
  const headers = { ...opts.headers, "content-type": "application/json" };
  const body = opts.body ?? SSE_BODY;
  const decoder = new TextDecoder();
  const once = async (): Promise<Sample> => {
    const t0 = performance.now();
    let head = NaN, ttfb = NaN, content = NaN, text = "";
    try {
      const res = await fetch(opts.url, {
        method: "POST",
        headers,
        body,
        client,
        signal: AbortSignal.timeout(opts.timeoutMs ?? 30_000),
      });
      head = performance.now() - t0;
      const reader = res.body!.getReader();
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        const now = performance.now() - t0;
        if (Number.isNaN(ttfb)) ttfb = now;
        text += decoder.decode(value, { stream: true });
        if (Number.isNaN(content) && /"content":"[^"]/.test(text)) content = now;
      }
      const total = performance.now() - t0;
      const events = text.split("\n\n").filter((e) => e.startsWith("data:")).length;
      const err = res.status !== 200
        ? `status ${res.status}: ${text.slice(0, 200)}`
        : !text.includes("data: [DONE]")
        ? "no [DONE]"
        : Number.isNaN(content)
        ? "no content token"
        : null;
      return { err, events, head, ttfb, content, total };
    } catch (e) {
      return { err: String(e), events: 0, head, ttfb, content, total: NaN };
    }
  };
  try {
    for (let i = 0; i < opts.warmup; i++) await once();
    const samples: Sample[] = [];
    for (let i = 0; i < opts.n; i++) samples.push(await once());
    return summarise(samples, opts.n, false);
  } finally {
    client.close();
  }
}

type Frame = Record<string, unknown>;

/** Sequential `chat.start` requests over one `/v1/ws` socket. */
export async function measureWs(opts: {
  url: string;
  token: string;
  n: number;
  warmup: number;
  model?: string;
  timeoutMs?: number;
}): Promise<StreamStats> {
  assertLoopback(opts.url.replace(/^ws/, "http"));
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const ws = new WebSocket(opts.url, ["convergio.v1", `bearer.${opts.token}`]);
  let onFrame: ((f: Frame, at: number) => void) | undefined;
  let failed: string | null = null;
  ws.onmessage = (m) => onFrame?.(JSON.parse(String(m.data)), performance.now());
  const CLOSED = "bench.socket-closed";
  ws.onclose = (e) => {
    failed ??= `socket closed (${e.code} ${e.reason})`;
    onFrame?.({ type: CLOSED }, performance.now());
  };
  ws.onerror = () => failed ??= "socket error";
  const until = (pred: (f: Frame) => boolean, what: string) =>
    new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        onFrame = undefined;
        reject(new Error(`timed out waiting for ${what}`));
      }, timeoutMs);
      onFrame = (f, at) => {
        if (!pred(f)) return;
        clearTimeout(timer);
        onFrame = undefined;
        resolve(at);
      };
    });
  try {
    await until((f) => f.type === "session.ready" || f.type === CLOSED, "session.ready");
    if (failed) throw new Error(`/v1/ws: ${failed}`);
    let seq = 0;
    const once = async (): Promise<Sample> => {
      if (failed) return { err: failed, events: 0, head: NaN, ttfb: NaN, content: NaN, total: NaN };
      const id = `bench-${seq++}`;
      let first = NaN, tokens = 0;
      const timer: { id?: ReturnType<typeof setTimeout> } = {};
      const done = new Promise<{ at: number; frame: Frame }>((resolve) => {
        timer.id = setTimeout(
          () => resolve({ at: NaN, frame: { type: "error", message: "timeout" } }),
          timeoutMs,
        );
        onFrame = (f, at) => {
          if (f.type === CLOSED) resolve({ at: NaN, frame: { type: "error", message: failed } });
          if (f.request_id !== id) return;
          if (f.type === "chat.token") {
            tokens++;
            if (Number.isNaN(first)) first = at;
          } else if (f.type === "chat.complete" || f.type === "error") {
            resolve({ at, frame: f });
          }
        };
      });
      const t0 = performance.now();
      ws.send(JSON.stringify({
        type: "chat.start",
        request_id: id,
        messages: [{ role: "user", content: "Say hello." }],
        model_hint: opts.model ?? "gpt-4o-mini",
        max_tokens: 32,
      }));
      const { at, frame } = await done;
      clearTimeout(timer.id);
      onFrame = undefined;
      const err = frame.type !== "chat.complete"
        ? `error frame: ${JSON.stringify(frame).slice(0, 200)}`
        : tokens === 0
        ? "no chat.token"
        : null;
      return {
        err,
        events: tokens,
        head: NaN,
        ttfb: first - t0,
        content: first - t0,
        total: at - t0,
      };
    };
    for (let i = 0; i < opts.warmup; i++) await once();
    const samples: Sample[] = [];
    for (let i = 0; i < opts.n; i++) samples.push(await once());
    return summarise(samples, opts.n, true);
  } finally {
    if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) {
      const closed = new Promise((r) => ws.addEventListener("close", r, { once: true }));
      ws.close(1000);
      await Promise.race([closed, new Promise((r) => setTimeout(r, 2000))]);
    }
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      url: { type: "string", default: "http://127.0.0.1:9100/v1/chat/completions" },
      n: { type: "string", default: "200" },
      warmup: { type: "string", default: "20" },
      header: { type: "string", multiple: true, default: [] },
    },
  });
  const headers = Object.fromEntries(
    values.header!.map((
      h,
    ) => [h.slice(0, h.indexOf(":")).trim(), h.slice(h.indexOf(":") + 1).trim()]),
  );
  console.log(JSON.stringify(
    await measureSse({
      url: values.url!,
      headers,
      n: Number(values.n),
      warmup: Number(values.warmup),
    }),
  ));
}
