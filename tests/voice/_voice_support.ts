import type { Config } from "../../src/config.ts";
import { startGateway, testConfig, type TestGateway } from "../support/gateway.ts";

/** A server frame as the client sees it. */
// deno-lint-ignore no-explicit-any
export type Frame = Record<string, any>;

/** Rejects after `ms` so that no wait is unbounded. */
export function bounded<T>(p: Promise<T>, ms = 5_000, what = "operation"): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Polls `check` (bounded) until it returns something. */
export async function eventually<T>(
  check: () => T | undefined,
  ms = 5_000,
  what = "condition",
): Promise<T> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const v = check();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`${what} did not happen within ${ms} ms`);
}

/**
 * A test client of the gateway's WebSockets: collects every frame and lets a
 * test wait, in order, for the next frame that matches.
 */
export class WsClient {
  readonly frames: Frame[] = [];
  #cursor = 0;
  #wake: Array<() => void> = [];
  readonly closed: Promise<CloseEvent>;
  readonly opened: Promise<void>;

  private constructor(readonly socket: WebSocket) {
    this.opened = new Promise((resolve, reject) => {
      socket.addEventListener("open", () => resolve(), { once: true });
      socket.addEventListener("error", () => reject(new Error("socket error before open")), {
        once: true,
      });
    });
    this.opened.catch(() => {});
    this.closed = new Promise((r) => socket.addEventListener("close", (e) => r(e), { once: true }));
    socket.onmessage = (m) => {
      this.frames.push(JSON.parse(String(m.data)));
      for (const w of this.#wake.splice(0)) w();
    };
    socket.addEventListener("close", () => {
      for (const w of this.#wake.splice(0)) w();
    });
  }

  /** Opens a socket with `Authorization: Bearer` (or, with `subprotocol`, the browser way). */
  static async connect(
    gw: TestGateway,
    token: string,
    opts: { path?: string; query?: Record<string, string>; subprotocol?: boolean } = {},
  ): Promise<WsClient> {
    const url = new URL(`${gw.url.replace(/^http/, "ws")}${opts.path ?? "/v1/voice/ws"}`);
    for (const [k, v] of Object.entries(opts.query ?? {})) url.searchParams.set(k, v);
    const socket = opts.subprotocol
      ? new WebSocket(url, ["convergio.v1", `bearer.${token}`])
      : new WebSocket(
        url,
        { headers: { authorization: `Bearer ${token}` } } as unknown as string[],
      );
    const client = new WsClient(socket);
    try {
      await bounded(client.opened, 5_000, "socket open");
    } catch (err) {
      await bounded(client.closed, 5_000, "socket close after failed open");
      throw err;
    }
    return client;
  }

  send(frame: Record<string, unknown>): void {
    this.socket.send(JSON.stringify(frame));
  }

  /** The next frame (after the last one returned) that matches; earlier ones are skipped. */
  async next(match: (f: Frame) => boolean, ms = 5_000, what = "frame"): Promise<Frame> {
    const deadline = Date.now() + ms;
    while (true) {
      for (let i = this.#cursor; i < this.frames.length; i++) {
        if (match(this.frames[i])) {
          this.#cursor = i + 1;
          return this.frames[i];
        }
      }
      const left = deadline - Date.now();
      if (left <= 0 || this.socket.readyState === WebSocket.CLOSED) {
        throw new Error(
          `${what} not received within ${ms} ms; got ${
            JSON.stringify(this.frames.slice(this.#cursor).map((f) => f.type))
          }`,
        );
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((r) => {
        this.#wake.push(r);
        timer = setTimeout(r, left);
      });
      clearTimeout(timer);
    }
  }

  /** The next frame of `type` (for `request_id`, when given). */
  nextOf(type: string, requestId?: string, ms = 5_000): Promise<Frame> {
    return this.next(
      (f) => f.type === type && (requestId === undefined || f.request_id === requestId),
      ms,
      `${type}${requestId ? ` for ${requestId}` : ""}`,
    );
  }

  /** Frames received so far from `from` on (all by default). */
  since(from = 0): Frame[] {
    return this.frames.slice(from);
  }

  /** Position after the last frame `next` returned. */
  get cursor(): number {
    return this.#cursor;
  }

  async close(code = 1000): Promise<CloseEvent | undefined> {
    if (this.socket.readyState === WebSocket.CLOSED) return await this.closed;
    if (this.socket.readyState !== WebSocket.CLOSING) this.socket.close(code);
    return await bounded(this.closed, 5_000, "socket close");
  }
}

/** `n` chunks of mono PCM16 of `bytes` each, with a ramp so that no two chunks encode alike. */
export function pcmChunks(n: number, bytes = 640): string[] {
  const out: string[] = [];
  for (let c = 0; c < n; c++) {
    const chunk = new Uint8Array(bytes);
    const view = new DataView(chunk.buffer);
    for (let i = 0; i < bytes / 2; i++) {
      view.setInt16(i * 2, ((c * 977 + i * 37) % 20_000) - 10_000, true);
    }
    out.push(toBase64(chunk));
  }
  return out;
}

export function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

export function fromBase64(text: string): Uint8Array {
  const s = atob(text);
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

export const VOICE_ALIAS = "voice-test";
export const VOICE_PRICE = { input_per_1m: 32, output_per_1m: 64 };

/**
 * A gateway config with the chat demo model (first, so it stays the default
 * chat alias) and a voice alias whose deployments are realtime_mock
 * providers, in order.
 */
export function voiceConfig(opts: {
  realtime?: Record<string, Record<string, unknown>>;
  voice?: Record<string, unknown>;
  /** Settings of the chat demo provider (protocol mock). */
  chat?: Record<string, unknown>;
  extra?: Record<string, unknown>;
} = {}): Config {
  const realtime = opts.realtime ?? { "rt-a": {} };
  const providers: Record<string, unknown> = { demo: { protocol: "mock", ...opts.chat } };
  for (const [name, cfg] of Object.entries(realtime)) {
    providers[name] = { protocol: "realtime_mock", ...cfg };
  }
  return testConfig({
    providers,
    models: {
      "convergio-demo": {
        deployments: [{ provider: "demo", model: "demo-large" }],
        price: { input_per_1m: 2, output_per_1m: 8 },
      },
      [VOICE_ALIAS]: {
        deployments: Object.keys(realtime).map((p) => ({ provider: p, model: `${p}-model` })),
        price: VOICE_PRICE,
        max_output_tokens: 2048,
      },
    },
    voice: { model: VOICE_ALIAS, ...opts.voice },
    ...opts.extra,
  });
}

/** One sample of a Prometheus text exposition, or undefined. */
export function metricValue(
  text: string,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  let total: number | undefined;
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/);
    if (!m || m[1] !== name) continue;
    const have: Record<string, string> = {};
    for (const [, k, v] of (m[3] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      have[k] = v;
    }
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) {
      total = (total ?? 0) + Number(m[4]);
    }
  }
  return total;
}

/** A `voice.start` frame (push-to-talk, pcm16 at 16 kHz unless `extra` says otherwise). */
export const voiceStart = (requestId: string, extra: Record<string, unknown> = {}) => ({
  type: "voice.start",
  request_id: requestId,
  codec: "pcm16",
  sample_rate: 16_000,
  mode: "push-to-talk",
  ...extra,
});

/** A `voice.chunk` frame. */
export const chunk = (requestId: string, bytes_base64: string) => ({
  type: "voice.chunk",
  request_id: requestId,
  bytes_base64,
});

/** Connects and waits for session.ready. */
export async function connect(
  gw: TestGateway,
  token: string,
  opts: Parameters<typeof WsClient.connect>[2] = {},
): Promise<{ c: WsClient; ready: Frame }> {
  const c = await WsClient.connect(gw, token, opts);
  try {
    const ready = await c.nextOf("session.ready");
    return { c, ready };
  } catch (err) {
    await c.close();
    throw err;
  }
}

/** Closes the clients (quietly), then the gateway. */
export async function closeAll(gw: TestGateway, ...clients: Array<WsClient | undefined>) {
  for (const c of clients) await c?.close().catch(() => {});
  await gw.close();
}

/** Sends voice.start and waits for that request's voice.ready. */
export function startVoice(
  c: WsClient,
  requestId: string,
  extra: Record<string, unknown> = {},
): Promise<Frame> {
  c.send(voiceStart(requestId, extra));
  return c.nextOf("voice.ready", requestId);
}

/** Sends `chunks` (or `pcmChunks(n)`) for `requestId`; returns what was sent. */
export function sendChunks(c: WsClient, requestId: string, chunks: string[] | number): string[] {
  const list = typeof chunks === "number" ? pcmChunks(chunks) : chunks;
  for (const b of list) c.send(chunk(requestId, b));
  return list;
}

/** Sends voice.stop. */
export function sendStop(c: WsClient, requestId: string): void {
  c.send({ type: "voice.stop", request_id: requestId });
}

/** Sends voice.stop and waits for that request's voice.complete. */
export function stopVoice(c: WsClient, requestId: string): Promise<Frame> {
  sendStop(c, requestId);
  return c.nextOf("voice.complete", requestId);
}

/** What a test with one voice socket gets. */
export interface VoiceSocket {
  gw: TestGateway;
  c: WsClient;
  /** The session.ready frame. */
  ready: Frame;
}

/**
 * Starts a gateway with `config`, connects one voice socket with a token of
 * `claims` and runs `body`; the socket and the gateway are closed after it.
 * `c` in the context may be closed by the body itself.
 */
export async function withVoiceSocket(
  config: Config,
  claims: Parameters<TestGateway["token"]>[0],
  body: (s: VoiceSocket) => Promise<void>,
  opts: Parameters<typeof WsClient.connect>[2] = {},
): Promise<void> {
  const gw = await startGateway(config);
  let c: WsClient | undefined;
  try {
    const s = await connect(gw, await gw.token(claims), opts);
    c = s.c;
    await body({ gw, c: s.c, ready: s.ready });
  } finally {
    await closeAll(gw, c);
  }
}

/** The gateway's Prometheus text. */
export async function metricsText(gw: TestGateway): Promise<string> {
  return await (await fetch(`${gw.url}/metrics`)).text();
}
