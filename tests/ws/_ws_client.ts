import assert from "node:assert/strict";
import type { Principal } from "../../src/auth/principal.ts";
import type { Config } from "../../src/config.ts";
import type { UsageEvent } from "../../src/metering/usage_event.ts";
import { startGateway, type TestGateway } from "../support/gateway.ts";

/** Shared scaffolding of the `GET /v1/ws` end-to-end tests: clients, waits and gateway scopes. */

export interface Frame {
  type: string;
  event_id: number;
  timestamp_ms: number;
  request_id?: string;
  [key: string]: unknown;
}

export const SUBPROTOCOL = "convergio.v1";
export const answer = (prompt: string) =>
  `Hello from the Convergio demo provider. You said: ${prompt}`;
export const USAGE_KEYS = "audio_in_s audio_out_s cost_usd in_tokens out_tokens tool_calls"
  .split(" ");

/** A demo provider with the given token timings. */
export const slow = (first_token_ms: number, inter_token_ms: number) => ({
  demo: { protocol: "mock", first_token_ms, inter_token_ms },
});

export type Claims = Parameters<TestGateway["token"]>[0];
export type OpenOpts = { via?: "header" | "protocol"; query?: string };

/** A WebSocket client that keeps every frame and waits (bounded) for the ones a test needs. */
export class WsClient {
  readonly frames: Frame[] = [];
  readonly binary: unknown[] = [];
  readonly closed: Promise<CloseEvent>;
  #wake?: () => void;

  private constructor(readonly ws: WebSocket) {
    this.closed = new Promise((resolve) =>
      ws.addEventListener("close", (e) => {
        this.#wake?.();
        resolve(e);
      })
    );
    ws.addEventListener("message", (e) => {
      if (typeof e.data === "string") this.frames.push(JSON.parse(e.data));
      else this.binary.push(e.data);
      this.#wake?.();
    });
  }

  /** Opens a socket; the token goes in the Authorization header or as a `bearer.` subprotocol. */
  static async open(gw: TestGateway, token: string, opts: OpenOpts = {}): Promise<WsClient> {
    const url = `${gw.url.replace("http", "ws")}/v1/ws${opts.query ? `?${opts.query}` : ""}`;
    const ws = opts.via === "protocol"
      ? new WebSocket(url, [SUBPROTOCOL, `bearer.${token}`])
      : new WebSocket(url, { headers: { authorization: `Bearer ${token}` } });
    const client = new WsClient(ws);
    const opened = await new Promise<boolean>((resolve) => {
      ws.addEventListener("open", () => resolve(true), { once: true });
      ws.addEventListener("error", () => resolve(false), { once: true });
    });
    if (!opened) {
      await client.closed;
      throw new Error("websocket failed to open");
    }
    return client;
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  start(requestId: string, fields: Record<string, unknown> = { prompt: "hi" }): void {
    this.send({ type: "chat.start", request_id: requestId, ...fields });
  }

  /** Starts a request and resolves with its final frame. */
  chat(requestId: string, fields?: Record<string, unknown>): Promise<Frame> {
    this.start(requestId, fields);
    return this.end(requestId);
  }

  /** Resolves when `done` holds over the frames so far; throws after `timeoutMs` or on close. */
  async until(done: (frames: Frame[]) => boolean, what: string, timeoutMs = 5_000) {
    const deadline = Date.now() + timeoutMs;
    while (!done(this.frames)) {
      const left = deadline - Date.now();
      if (left <= 0 || this.ws.readyState === WebSocket.CLOSED) {
        throw new Error(`gave up waiting for ${what}; frames: ${JSON.stringify(this.frames)}`);
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        timer = setTimeout(resolve, Math.min(left, 100));
      });
      clearTimeout(timer);
    }
  }

  async waitFor(pred: (f: Frame) => boolean, what: string, timeoutMs = 5_000): Promise<Frame> {
    await this.until((fs) => fs.some(pred), what, timeoutMs);
    return this.frames.find(pred)!;
  }

  /** The request's final frame: chat.complete or error. */
  end(requestId: string, timeoutMs = 5_000): Promise<Frame> {
    return this.waitFor(
      (f) => f.request_id === requestId && (f.type === "chat.complete" || f.type === "error"),
      `the end of ${requestId}`,
      timeoutMs,
    );
  }

  /** The next error frame after `index`. */
  errorAfter(index: number, what: string): Promise<Frame> {
    return this.waitFor((f) => f.type === "error" && this.frames.indexOf(f) >= index, what);
  }

  /** Waits until `requestId` (every request when omitted) has streamed `n` tokens. */
  tokens(n: number, requestId?: string): Promise<void> {
    return this.until(
      (fs) =>
        fs.filter((f) => f.type === "chat.token" && (!requestId || f.request_id === requestId))
          .length >= n,
      `${n} tokens`,
    );
  }

  ofRequest(requestId: string): Frame[] {
    return this.frames.filter((f) => f.request_id === requestId);
  }

  text(requestId: string): string {
    return tokenText(this.ofRequest(requestId));
  }

  /** The latest session.ready on this socket. */
  get ready(): Frame {
    return this.frames.findLast((f) => f.type === "session.ready")!;
  }

  get lastEventId(): number {
    return Math.max(0, ...this.frames.map((f) => f.event_id));
  }

  /** Resolves with the close event, or undefined if the socket is still open after `ms`. */
  closedWithin(ms = 5_000): Promise<CloseEvent | undefined> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    return Promise.race([
      this.closed,
      new Promise<undefined>((r) => timer = setTimeout(() => r(undefined), ms)),
    ]).finally(() => clearTimeout(timer));
  }

  async close(code = 1000, reason = ""): Promise<CloseEvent> {
    if (this.ws.readyState === WebSocket.CONNECTING || this.ws.readyState === WebSocket.OPEN) {
      this.ws.close(code, reason);
    }
    return await this.closed;
  }
}

/** The text of the chat.token frames among `frames`, in order. */
export function tokenText(frames: Frame[]): string {
  return frames.filter((f) => f.type === "chat.token").map((f) => f.text).join("");
}

export interface Opened {
  c: WsClient;
  ready: Frame;
  sid: string;
}

/** Opens a socket and waits for its session.ready. */
export async function connect(
  gw: TestGateway,
  token: string,
  opts: OpenOpts = {},
): Promise<Opened> {
  const c = await WsClient.open(gw, token, opts);
  // A resume may replay the session's first session.ready: wait for this socket's own.
  const resuming = opts.query?.includes("session_id=") ?? false;
  try {
    const ready = await c.waitFor(
      (f) => f.type === "session.ready" && f.resumed === resuming,
      "session.ready",
    );
    return { c, ready, sid: String(ready.session_id) };
  } catch (err) {
    await c.close();
    throw err;
  }
}

export interface Scope {
  gw: TestGateway;
  /** Connects with a token (or one minted for `claims`); the scope closes the socket. */
  open(auth?: string | Claims, opts?: OpenOpts): Promise<Opened>;
}

/** Runs `body` against a fresh gateway, then closes every socket it opened and the gateway. */
export async function withGateway(
  config: Config | undefined,
  body: (s: Scope) => Promise<void>,
): Promise<void> {
  const gw = await startGateway(config);
  const clients: WsClient[] = [];
  const open = async (auth?: string | Claims, opts?: OpenOpts) => {
    const token = typeof auth === "string" ? auth : await gw.token(auth);
    const opened = await connect(gw, token, opts);
    clients.push(opened.c);
    return opened;
  };
  try {
    await body({ gw, open });
  } finally {
    for (const c of clients) await c.close();
    await gw.close();
  }
}

/** `withGateway` with one socket already open (with a token for `claims`). */
export function withSocket(
  config: Config | undefined,
  body: (s: Scope & Opened) => Promise<void>,
  claims?: Claims,
): Promise<void> {
  return withGateway(config, async (s) => body({ ...s, ...(await s.open(claims)) }));
}

/**
 * Sends an upgrade request over a raw TCP connection and reads the HTTP
 * answer, so refusals before the upgrade are seen with their status and body.
 */
export async function rawUpgrade(
  gw: TestGateway,
  path: string,
  headers: Record<string, string>,
  upgrade = true,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const port = Number(new URL(gw.url).port);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const timer = setTimeout(() => conn.close(), 5_000);
  try {
    const lines = [
      `GET ${path} HTTP/1.1`,
      `Host: 127.0.0.1:${port}`,
      ...(upgrade
        ? [
          "Upgrade: websocket",
          "Connection: Upgrade",
          "Sec-WebSocket-Version: 13",
          `Sec-WebSocket-Key: ${btoa("0123456789abcdef")}`,
        ]
        : ["Connection: close"]),
      ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
      "",
      "",
    ];
    await conn.write(new TextEncoder().encode(lines.join("\r\n")));
    let text = "";
    const buf = new Uint8Array(65_536);
    const decoder = new TextDecoder();
    while (true) {
      const head = text.indexOf("\r\n\r\n");
      if (head >= 0) {
        const length = /content-length:\s*(\d+)/i.exec(text.slice(0, head))?.[1];
        const body = text.slice(head + 4);
        if (length !== undefined && new TextEncoder().encode(body).length >= Number(length)) {
          return {
            status: Number(text.slice(9, 12)),
            body: JSON.parse(body.slice(0, Number(length))),
          };
        }
        if (
          /transfer-encoding:\s*chunked/i.test(text.slice(0, head)) && body.endsWith("0\r\n\r\n")
        ) {
          const chunks = body.split("\r\n").filter((_, i) => i % 2 === 1).join("");
          return { status: Number(text.slice(9, 12)), body: JSON.parse(chunks) };
        }
      }
      const n = await conn.read(buf);
      if (n === null) throw new Error(`connection closed; got ${JSON.stringify(text)}`);
      text += decoder.decode(buf.subarray(0, n), { stream: true });
    }
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed by the timer */ }
  }
}

/** Asserts an upgrade request with `headers` is refused with `status` (and error `code`). */
export async function assertRefused(
  gw: TestGateway,
  path: string,
  headers: Record<string, string>,
  status: number,
  code?: string,
  upgrade = true,
): Promise<void> {
  const res = await rawUpgrade(gw, path, headers, upgrade);
  assert.equal(res.status, status, path);
  if (code !== undefined) {
    assert.equal((res.body.error as Record<string, unknown>).code, code, path);
  }
}

/** Asserts that resuming `sid` with `token` is refused as session.expired (410). */
export function assertExpired(
  gw: TestGateway,
  sid: string,
  token: string,
  lastEventId = 1,
): Promise<void> {
  return assertRefused(
    gw,
    `/v1/ws?session_id=${sid}&last_event_id=${lastEventId}`,
    { authorization: `Bearer ${token}` },
    410,
    "session.expired",
  );
}

/** Asserts `frame` is an error frame with `code` (and `retryable`, and a message matching). */
export function assertError(
  frame: Frame,
  code: string,
  expect: { retryable?: boolean; message?: RegExp } = {},
): void {
  assert.equal(frame.type, "error");
  assert.equal(frame.code, code);
  if (expect.retryable !== undefined) assert.equal(frame.retryable, expect.retryable);
  if (expect.message) assert.match(String(frame.message), expect.message);
}

/** A counter's value summed over the label sets that include all of `labels`. */
export async function metric(gw: TestGateway, name: string, labels: Record<string, string> = {}) {
  const res = await fetch(`${gw.url}/metrics`);
  const text = await res.text();
  let sum = 0;
  for (const line of text.split("\n")) {
    const m = /^([a-z_]+)(\{[^}]*\})?\s+(\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const set = m[2] ?? "";
    if (Object.entries(labels).every(([k, v]) => set.includes(`${k}="${v}"`))) sum += Number(m[3]);
  }
  return sum;
}

/** Polls until `check` is true, at most `timeoutMs`. */
export async function eventually(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 5_000,
) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Waits until the gateway holds no WebSocket session. */
export function sessionsEnded(gw: TestGateway, what = "the session ended"): Promise<void> {
  return eventually(() => gw.deps.edge!.sessions.size === 0, what);
}

/** Waits until chat session `sid` (of t1/u1, byok) has no socket attached. */
export function detached(gw: TestGateway, sid: string, what: string): Promise<void> {
  const principal: Principal = { tenant_id: "t1", user_id: "u1", roles: ["user"], mode: "byok" };
  return eventually(() => !gw.deps.edge!.sessions.find(sid, "chat", principal)?.attached, what);
}

export function usageEvent(gw: TestGateway, requestId: string): UsageEvent | undefined {
  return gw.events.find((e) => e.request_id === requestId);
}

export async function waitForEvent(gw: TestGateway, requestId: string): Promise<UsageEvent> {
  await eventually(() => usageEvent(gw, requestId) !== undefined, `usage event ${requestId}`);
  return usageEvent(gw, requestId)!;
}

/** Waits for the usage event of a failed request and asserts its error code. */
export async function failedEvent(
  gw: TestGateway,
  requestId: string,
  code: string,
): Promise<UsageEvent> {
  const event = await waitForEvent(gw, requestId);
  assert.equal(event.success, false);
  assert.equal(event.error_code, code);
  return event;
}

/** The request log line of `requestId`. */
export function requestLog(gw: TestGateway, requestId: string) {
  return gw.logs.find((l) => l.msg === "request" && l.request_id === requestId);
}

export function assertIncreasing(frames: Frame[]) {
  for (let i = 1; i < frames.length; i++) {
    assert.ok(
      frames[i].event_id > frames[i - 1].event_id,
      `event ids must increase: ${frames[i - 1].event_id} then ${frames[i].event_id}`,
    );
  }
}
