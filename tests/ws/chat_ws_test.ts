import assert from "node:assert/strict";
import { periodsAt, requestScopes, type SpendScope } from "../../src/budget/store.ts";
import type { UsageEvent } from "../../src/metering/usage_event.ts";
import { startGateway, testConfig, type TestGateway } from "../support/gateway.ts";

/** End-to-end tests of `GET /v1/ws`: a real server on a free port and real WebSocket clients. */

interface Frame {
  type: string;
  event_id: number;
  timestamp_ms: number;
  request_id?: string;
  [key: string]: unknown;
}

const SUBPROTOCOL = "convergio.v1";
const answer = (prompt: string) => `Hello from the Convergio demo provider. You said: ${prompt}`;
const USAGE_KEYS = [
  "audio_in_s",
  "audio_out_s",
  "cost_usd",
  "in_tokens",
  "out_tokens",
  "tool_calls",
];

/** A WebSocket client that keeps every frame and waits (bounded) for the ones a test needs. */
class WsClient {
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
  static async open(
    gw: TestGateway,
    token: string,
    opts: { via?: "header" | "protocol"; query?: string } = {},
  ): Promise<WsClient> {
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

  ofRequest(requestId: string): Frame[] {
    return this.frames.filter((f) => f.request_id === requestId);
  }

  text(requestId: string): string {
    return this.ofRequest(requestId).filter((f) => f.type === "chat.token").map((f) => f.text)
      .join("");
  }

  get lastEventId(): number {
    return Math.max(0, ...this.frames.map((f) => f.event_id));
  }

  async close(code = 1000, reason = ""): Promise<CloseEvent> {
    if (this.ws.readyState === WebSocket.CONNECTING || this.ws.readyState === WebSocket.OPEN) {
      this.ws.close(code, reason);
    }
    return await this.closed;
  }
}

/** Opens a socket and waits for its session.ready. */
async function connect(
  gw: TestGateway,
  token: string,
  opts: { via?: "header" | "protocol"; query?: string } = {},
): Promise<{ c: WsClient; ready: Frame }> {
  const c = await WsClient.open(gw, token, opts);
  // A resume may replay the session's first session.ready: wait for this socket's own.
  const resuming = opts.query?.includes("session_id=") ?? false;
  try {
    const ready = await c.waitFor(
      (f) => f.type === "session.ready" && f.resumed === resuming,
      "session.ready",
    );
    return { c, ready };
  } catch (err) {
    await c.close();
    throw err;
  }
}

/**
 * Sends an upgrade request over a raw TCP connection and reads the HTTP
 * answer, so refusals before the upgrade are seen with their status and body.
 */
async function rawUpgrade(
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

/** A counter's value summed over the label sets that include all of `labels`. */
async function metric(gw: TestGateway, name: string, labels: Record<string, string> = {}) {
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
async function eventually(
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

function usageEvent(gw: TestGateway, requestId: string): UsageEvent | undefined {
  return gw.events.find((e) => e.request_id === requestId);
}

async function waitForEvent(gw: TestGateway, requestId: string): Promise<UsageEvent> {
  await eventually(() => usageEvent(gw, requestId) !== undefined, `usage event ${requestId}`);
  return usageEvent(gw, requestId)!;
}

function assertIncreasing(frames: Frame[]) {
  for (let i = 1; i < frames.length; i++) {
    assert.ok(
      frames[i].event_id > frames[i - 1].event_id,
      `event ids must increase: ${frames[i - 1].event_id} then ${frames[i].event_id}`,
    );
  }
}

const slow = (first_token_ms: number, inter_token_ms: number) => ({
  demo: { protocol: "mock", first_token_ms, inter_token_ms },
});

// ---------------------------------------------------------------------------------------------
// Happy path and authentication

Deno.test("ws chat: tokens, chat.complete with usage, increasing event ids, usage event and log", async () => {
  const gw = await startGateway();
  let c: WsClient | undefined;
  try {
    const opened = await connect(gw, await gw.token());
    c = opened.c;
    const { ready } = opened;
    assert.equal(c.frames[0], ready, "session.ready is the first frame");
    assert.match(String(ready.session_id), /^wss_[0-9a-f]{32}$/);
    assert.equal(ready.resumed, false);
    assert.equal(ready.resume_window_ms, 60_000);
    assert.equal(ready.request_id, undefined);
    assert.equal(ready.frames_lost, undefined);

    c.start("r1", { prompt: "Hi there" });
    const done = await c.end("r1");
    assert.equal(done.type, "chat.complete");
    assert.equal(c.text("r1"), answer("Hi there"));
    assert.equal(done.model, "convergio-demo");
    assert.equal(done.provider, "demo");
    assert.equal(done.finish_reason, "stop");
    const usage = done.usage as Record<string, number>;
    assert.deepEqual(Object.keys(usage).sort(), USAGE_KEYS);
    assert.equal(usage.out_tokens, answer("Hi there").split(" ").length);
    assert.ok(usage.in_tokens > 0);
    assert.equal(usage.tool_calls, 0);
    assert.equal(usage.audio_in_s, 0);
    assert.equal(usage.audio_out_s, 0);
    assert.equal(usage.cost_usd, (usage.in_tokens * 2 + usage.out_tokens * 8) / 1e6);

    assertIncreasing(c.frames);
    assert.equal(c.frames[0].event_id, 1);
    for (const f of c.frames) {
      assert.equal(typeof f.timestamp_ms, "number");
      assert.ok(Number.isInteger(f.event_id));
      if (f.type !== "session.ready") assert.equal(f.request_id, "r1");
    }
    assert.ok(c.frames.filter((f) => f.type === "chat.token").length > 1, "streamed in tokens");

    const sid = String(ready.session_id);
    const event = await waitForEvent(gw, `${sid}:r1`);
    assert.equal(event.success, true);
    assert.equal(event.error_code, null);
    assert.equal(event.session_id, sid);
    assert.equal(event.tenant_id, "t1");
    assert.equal(event.user_id, "u1");
    assert.equal(event.mode, "byok");
    assert.equal(event.model, "convergio-demo");
    assert.equal(event.provider, "demo");
    assert.equal(event.output_tokens, usage.out_tokens);
    assert.equal(event.input_tokens, usage.in_tokens);
    assert.equal(event.cost_usd, usage.cost_usd);

    const line = gw.logs.find((l) => l.msg === "request" && l.request_id === `${sid}:r1`);
    assert.ok(line, "a request log line for the frame's request");
    assert.equal(line.method, "WS");
    assert.equal(line.route, "/v1/ws");
    assert.equal(line.session_id, sid);
    assert.equal(line.status, 200);
    assert.equal(line.output_tokens, usage.out_tokens);
  } finally {
    await c?.close();
    await gw.close();
  }
});

Deno.test("ws auth: a bearer.<jwt> subprotocol beside convergio.v1 works, and the server answers convergio.v1", async () => {
  const gw = await startGateway();
  let c: WsClient | undefined;
  try {
    const opened = await connect(gw, await gw.token(), { via: "protocol" });
    c = opened.c;
    assert.equal(c.ws.protocol, SUBPROTOCOL);
    c.start("p1", { messages: [{ role: "user", content: "via protocol" }] });
    const done = await c.end("p1");
    assert.equal(done.type, "chat.complete");
    assert.equal(c.text("p1"), answer("via protocol"));
  } finally {
    await c?.close();
    await gw.close();
  }
});

Deno.test("ws auth: refusals come before the upgrade, with the contract's codes", async () => {
  const gw = await startGateway();
  try {
    const token = await gw.token();
    const missing = await rawUpgrade(gw, "/v1/ws", {});
    assert.equal(missing.status, 401);
    assert.equal((missing.body.error as Record<string, unknown>).code, "auth.invalid");

    const bad = await rawUpgrade(gw, "/v1/ws", { authorization: "Bearer not.a.jwt" });
    assert.equal(bad.status, 401);
    assert.equal((bad.body.error as Record<string, unknown>).code, "auth.invalid");

    const badProtocol = await rawUpgrade(gw, "/v1/ws", {
      "sec-websocket-protocol": `${SUBPROTOCOL}, bearer.garbage`,
    });
    assert.equal(badProtocol.status, 401);

    const alone = await rawUpgrade(gw, "/v1/ws", { "sec-websocket-protocol": `bearer.${token}` });
    assert.equal(alone.status, 400);
    assert.equal((alone.body.error as Record<string, unknown>).code, "request.invalid");

    const unknown = await rawUpgrade(gw, "/v1/ws?session_id=wss_nope&last_event_id=3", {
      authorization: `Bearer ${token}`,
    });
    assert.equal(unknown.status, 410);
    assert.equal((unknown.body.error as Record<string, unknown>).code, "session.expired");

    const plain = await rawUpgrade(gw, "/v1/ws", { authorization: `Bearer ${token}` }, false);
    assert.equal(plain.status, 426);

    // A browser-style client just fails to open.
    await assert.rejects(WsClient.open(gw, "not.a.jwt"), /failed to open/);
    await assert.rejects(WsClient.open(gw, "not.a.jwt", { via: "protocol" }), /failed to open/);
    assert.equal(gw.deps.edge!.sessions.size, 0, "no session for a refused upgrade");
  } finally {
    await gw.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Several requests on one socket

Deno.test("ws concurrency: requests in flight at once interleave, each complete and in order", async () => {
  const gw = await startGateway(testConfig({ providers: slow(20, 15) }));
  let c: WsClient | undefined;
  try {
    ({ c } = await connect(gw, await gw.token()));
    const prompts: Record<string, string> = {
      a: "first of three",
      b: "second one here",
      c: "and the third",
    };
    for (const [id, prompt] of Object.entries(prompts)) c.start(id, { prompt });
    for (const id of Object.keys(prompts)) {
      assert.equal((await c.end(id)).type, "chat.complete");
    }
    for (const [id, prompt] of Object.entries(prompts)) {
      assert.equal(c.text(id), answer(prompt), `request ${id} complete and in order`);
      const mine = c.ofRequest(id);
      assert.equal(mine[mine.length - 1].type, "chat.complete", "chat.complete is its last frame");
    }
    assertIncreasing(c.frames);
    // Interleaved: some frame of another request lies between a's first and last frame.
    const order = c.frames.map((f) => f.request_id);
    const first = order.indexOf("a");
    const last = order.lastIndexOf("a");
    assert.ok(
      order.slice(first, last).some((r) => r === "b" || r === "c"),
      `frames interleave: ${order.join(",")}`,
    );
    const sid = String(c.frames[0].session_id);
    await eventually(() => gw.events.length >= 3, "three usage events");
    assert.deepEqual(
      gw.events.map((e) => e.request_id).sort(),
      ["a", "b", "c"].map((id) => `${sid}:${id}`),
    );
  } finally {
    await c?.close();
    await gw.close();
  }
});

Deno.test("ws concurrency: over max_inflight → quota.exceeded; a duplicate in-flight id → request.invalid", async () => {
  const gw = await startGateway(testConfig({ providers: slow(100, 30), ws: { max_inflight: 2 } }));
  let c: WsClient | undefined;
  try {
    ({ c } = await connect(gw, await gw.token()));
    c.start("one", { prompt: "one" });
    c.start("two", { prompt: "two" });
    c.start("three", { prompt: "three" });
    const over = await c.waitFor((f) => f.request_id === "three", "three's refusal");
    assert.equal(over.type, "error");
    assert.equal(over.code, "quota.exceeded");
    assert.equal(over.retryable, true);
    assert.match(String(over.message), /at most 2/);

    c.start("one", { prompt: "again" });
    const dup = await c.waitFor(
      (f) => f.request_id === "one" && f.type === "error",
      "the duplicate's refusal",
    );
    assert.equal(dup.code, "request.invalid");
    assert.equal(dup.retryable, false);

    const complete = (id: string) =>
      c!.waitFor((f) => f.request_id === id && f.type === "chat.complete", `${id} complete`);
    await complete("one");
    await complete("two");
    assert.equal(c.text("one"), answer("one"), "the duplicate did not disturb the original");
    assert.equal(c.text("two"), answer("two"));
    assert.equal(c.ofRequest("three").length, 1, "a refused request sends nothing more");

    // Once the others finished, a new request is admitted again.
    c.start("four", { prompt: "four" });
    assert.equal((await c.end("four")).type, "chat.complete");
    const sid = String(c.frames[0].session_id);
    assert.equal(usageEvent(gw, `${sid}:three`), undefined, "refused before any provider call");
  } finally {
    await c?.close();
    await gw.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Tool calls and cancel

Deno.test("ws tools: a tool.call frame with its JSON arguments, then chat.complete with tool_calls 1", async () => {
  const gw = await startGateway();
  let c: WsClient | undefined;
  try {
    ({ c } = await connect(gw, await gw.token()));
    c.start("t1", {
      prompt: "weather in Rome?",
      tools: [{
        type: "function",
        function: {
          name: "get_weather",
          description: "current weather",
          parameters: {
            type: "object",
            properties: { city: { type: "string" }, days: { type: "integer" } },
          },
        },
      }],
      tool_choice: "auto",
    });
    const done = await c.end("t1");
    assert.equal(done.type, "chat.complete");
    assert.equal(done.finish_reason, "tool_calls");
    assert.equal((done.usage as Record<string, number>).tool_calls, 1);
    const calls = c.ofRequest("t1").filter((f) => f.type === "tool.call");
    assert.equal(calls.length, 1);
    const call = calls[0];
    assert.ok(call.event_id < done.event_id, "tool.call comes before chat.complete");
    assert.match(String(call.tool_call_id), /^call_/);
    assert.equal(call.tool_name, "get_weather");
    const args = typeof call.arguments === "string" ? JSON.parse(call.arguments) : call.arguments;
    assert.deepEqual(args, { city: answer("weather in Rome?"), days: 1 });
    assert.equal(c.text("t1"), "");
    const event = await waitForEvent(gw, `${c.frames[0].session_id}:t1`);
    assert.equal(event.tool_calls_count, 1);
    assert.equal(event.success, true);
  } finally {
    await c?.close();
    await gw.close();
  }
});

Deno.test("ws cancel: chat.cancel mid-stream → finish_reason cancelled, usage for what was produced, budget settled to actual", async () => {
  const price = { input_per_1m: 1000, output_per_1m: 1000 };
  const gw = await startGateway(testConfig({
    providers: slow(0, 50),
    models: { "convergio-demo": { deployments: [{ provider: "demo", model: "m" }], price } },
    tenant_defaults: { daily_budget_usd: 100, monthly_budget_usd: 1000 },
  }));
  let c: WsClient | undefined;
  try {
    ({ c } = await connect(gw, await gw.token({ mode: "managed" })));
    const prompt = "a long prompt so that the answer takes a while to stream out";
    c.start("k1", { prompt });
    await c.until(
      (fs) => fs.filter((f) => f.request_id === "k1" && f.type === "chat.token").length >= 3,
      "three tokens",
    );
    c.send({ type: "chat.cancel", request_id: "k1" });
    const done = await c.end("k1");
    assert.equal(done.type, "chat.complete");
    assert.equal(done.finish_reason, "cancelled");
    assert.equal(done.model, "convergio-demo");
    const usage = done.usage as Record<string, number>;
    assert.deepEqual(Object.keys(usage).sort(), USAGE_KEYS);
    const full = answer(prompt);
    const seen = c.text("k1");
    assert.ok(seen.length < full.length && full.startsWith(seen), "cut short, in order");
    assert.ok(usage.out_tokens > 0, "charged for the tokens produced");
    assert.ok(usage.in_tokens > 0);
    assert.equal(usage.cost_usd, (usage.in_tokens + usage.out_tokens) * 1000 / 1e6);

    const sid = String(c.frames[0].session_id);
    const event = await waitForEvent(gw, `${sid}:k1`);
    assert.equal(event.success, false);
    assert.equal(event.error_code, "request.cancelled");
    assert.equal(event.output_tokens, usage.out_tokens);
    assert.equal(event.input_tokens, usage.in_tokens);
    assert.equal(event.cost_usd, usage.cost_usd);
    const line = gw.logs.find((l) => l.msg === "request" && l.request_id === `${sid}:k1`);
    assert.equal(line?.status, 499);

    // The guard kept only the actual (estimated) cost, not the worst-case reservation.
    await gw.deps.edge!.guard.idle();
    const scopes: SpendScope[] = requestScopes("t1", "u1", periodsAt(Date.now()));
    const spend = await gw.deps.edge!.store.spend(scopes);
    const actual = (usage.in_tokens + usage.out_tokens) * 1000;
    assert.deepEqual(spend, scopes.map(() => actual));
    assert.ok(actual < 4096 * 1000, "well under the reservation");

    // Cancelling what is not in flight is an error on the socket, which stays usable.
    const before = c.frames.length;
    c.send({ type: "chat.cancel", request_id: "k1" });
    const err = await c.errorAfter(before, "cancel of a finished request");
    assert.equal(err.code, "request.invalid");
    assert.equal(err.request_id, "k1");
    c.start("k2", { prompt: "ok" });
    assert.equal((await c.end("k2")).type, "chat.complete");
  } finally {
    await c?.close();
    await gw.close();
  }
});

Deno.test("ws cancel: chat.cancel before the first token → chat.complete cancelled, not an internal error", async () => {
  const gw = await startGateway(testConfig({ providers: slow(400, 10) }));
  let c: WsClient | undefined;
  try {
    ({ c } = await connect(gw, await gw.token()));
    const sid = String(c.frames[0].session_id);
    c.start("e1", { prompt: "never mind" });
    // The provider is still waiting for its first token when the cancel arrives.
    await new Promise((r) => setTimeout(r, 100));
    c.send({ type: "chat.cancel", request_id: "e1" });
    const end = await c.end("e1");
    assert.equal(c.text("e1"), "");
    assert.notEqual(
      end.code,
      "internal",
      `a client cancel is not a server error: ${JSON.stringify(end)}`,
    );
    assert.equal(end.type, "chat.complete");
    assert.equal(end.finish_reason, "cancelled");
    const event = await waitForEvent(gw, `${sid}:e1`);
    assert.equal(event.success, false);
    assert.equal(event.error_code, "request.cancelled");
    const line = gw.logs.find((l) => l.msg === "request" && l.request_id === `${sid}:e1`);
    assert.equal(line?.status, 499);
  } finally {
    await c?.close();
    await gw.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Invalid frames

Deno.test("ws invalid frames: each gets a request.invalid error frame and the socket stays usable", async () => {
  const gw = await startGateway(testConfig({ ws: { max_frame_bytes: 200 } }));
  let c: WsClient | undefined;
  try {
    ({ c } = await connect(gw, await gw.token()));
    const cases: Array<[string, unknown, string | undefined]> = [
      ["not JSON", "{nope", undefined],
      ["a JSON array", "[1,2]", undefined],
      ["JSON null", "null", undefined],
      ["an unknown type", { type: "chat.explode", request_id: "u1" }, "u1"],
      ["no type", { request_id: "u2", prompt: "x" }, "u2"],
      ["a voice frame on the chat socket", {
        type: "voice.stop",
        request_id: "u3",
      }, "u3"],
      ["no request_id", { type: "chat.start", prompt: "x" }, undefined],
      ["a bad request_id", { type: "chat.start", request_id: "sp ace", prompt: "x" }, "sp ace"],
      ["prompt and messages", {
        type: "chat.start",
        request_id: "u4",
        prompt: "x",
        messages: [{ role: "user", content: "y" }],
      }, "u4"],
      ["neither prompt nor messages", { type: "chat.start", request_id: "u5" }, "u5"],
      ["an unknown field", { type: "chat.start", request_id: "u6", prompt: "x", agent: 1 }, "u6"],
      ["a bad temperature", {
        type: "chat.start",
        request_id: "u7",
        prompt: "x",
        temperature: 9,
      }, "u7"],
      ["an oversized frame", {
        type: "chat.start",
        request_id: "u8",
        prompt: "x".repeat(300),
      }, undefined],
    ];
    for (const [what, frame, requestId] of cases) {
      const before = c.frames.length;
      c.send(frame);
      const err = await c.errorAfter(before, what);
      assert.equal(err.code, "request.invalid", what);
      assert.equal(err.retryable, false, what);
      assert.equal(typeof err.message, "string", what);
      assert.equal(err.request_id, requestId, what);
    }
    const sized = c.frames.filter((f) => f.type === "error").pop()!;
    assert.match(String(sized.message), /exceeds 200 bytes/);
    assert.equal(c.ws.readyState, WebSocket.OPEN);

    c.start("fine", { prompt: "still here" });
    const done = await c.end("fine");
    assert.equal(done.type, "chat.complete");
    assert.equal(c.text("fine"), answer("still here"));
    assertIncreasing(c.frames);
    assert.equal(gw.events.length <= 1, true, "no usage for frames that never started");
  } finally {
    await c?.close();
    await gw.close();
  }
});

Deno.test("ws invalid frames: a type named like an Object.prototype key is request.invalid, not a crash", async () => {
  const gw = await startGateway();
  let c: WsClient | undefined;
  // A throw inside the server's onmessage would be an uncaught error: in production it ends
  // the process. Catch it here so that it fails this test only.
  const uncaught: unknown[] = [];
  const onError = (e: ErrorEvent) => {
    e.preventDefault();
    uncaught.push(e.error);
  };
  globalThis.addEventListener("error", onError);
  try {
    const client = (await connect(gw, await gw.token())).c;
    c = client;
    for (const type of ["toString", "constructor", "hasOwnProperty", "__proto__"]) {
      const before: number = client.frames.length;
      client.send({ type, request_id: "p1" });
      await client.until(
        (fs) => uncaught.length > 0 || fs.slice(before).some((f) => f.type === "error"),
        `an error frame for type ${type}`,
      );
      assert.deepEqual(uncaught.map(String), [], `type ${type} threw inside the server`);
      const err = client.frames.slice(before).find((f) => f.type === "error")!;
      assert.equal(err.code, "request.invalid");
      assert.equal(err.request_id, "p1");
    }
    client.start("after");
    assert.equal((await client.end("after")).type, "chat.complete");
  } finally {
    globalThis.removeEventListener("error", onError);
    await c?.close();
    await gw.close();
  }
});

Deno.test("ws invalid frames: a mode other than the token's lane is refused", async () => {
  const gw = await startGateway();
  let c: WsClient | undefined;
  try {
    ({ c } = await connect(gw, await gw.token({ mode: "byok" })));
    c.start("m1", { prompt: "x", mode: "managed" });
    const err = await c.end("m1");
    assert.equal(err.type, "error");
    assert.equal(err.code, "request.invalid");
    assert.match(String(err.message), /lane/);
  } finally {
    await c?.close();
    await gw.close();
  }
});

Deno.test("ws invalid frames: a binary frame gets an error frame, then close 1003", async () => {
  const gw = await startGateway();
  let c: WsClient | undefined;
  try {
    ({ c } = await connect(gw, await gw.token()));
    c.ws.send(new Uint8Array([1, 2, 3]));
    const closed = await Promise.race([
      c.closed,
      new Promise<undefined>((r) => setTimeout(() => r(undefined), 5_000)),
    ]);
    assert.ok(closed, "the server closed the socket");
    assert.equal(closed.code, 1003);
    const err = c.frames.find((f) => f.type === "error");
    assert.ok(err, "an error frame came before the close");
    assert.equal(err.code, "request.invalid");
    assert.match(String(err.message), /binary/);
  } finally {
    await c?.close();
    await gw.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Guardrails: the same chat service and guard as HTTP

Deno.test("ws guardrails: rpm limit → error quota.exceeded (retryable)", async () => {
  const gw = await startGateway(testConfig({ tenant_defaults: { rpm: 1 } }));
  let c: WsClient | undefined;
  try {
    ({ c } = await connect(gw, await gw.token()));
    c.start("g1");
    assert.equal((await c.end("g1")).type, "chat.complete");
    c.start("g2");
    const err = await c.end("g2");
    assert.equal(err.type, "error");
    assert.equal(err.code, "quota.exceeded");
    assert.equal(err.retryable, true);
    const event = await waitForEvent(gw, `${c.frames[0].session_id}:g2`);
    assert.equal(event.success, false);
    assert.equal(event.error_code, "quota.exceeded");
  } finally {
    await c?.close();
    await gw.close();
  }
});

Deno.test("ws guardrails: managed spend at 110% → error budget.blocked; BYOK still answers", async () => {
  const gw = await startGateway(
    testConfig({ tenant_defaults: { daily_budget_usd: 100, monthly_budget_usd: 1000 } }),
  );
  let c: WsClient | undefined;
  let b: WsClient | undefined;
  try {
    const day = { scope: "tenant", id: "t1", period: "day", bucket: periodsAt(Date.now()).day };
    await gw.deps.edge!.store.setSpend(day as SpendScope, 110_000_000);
    ({ c } = await connect(gw, await gw.token({ mode: "managed" })));
    c.start("b1");
    const err = await c.end("b1");
    assert.equal(err.type, "error");
    assert.equal(err.code, "budget.blocked");
    assert.equal(err.retryable, false);
    const event = await waitForEvent(gw, `${c.frames[0].session_id}:b1`);
    assert.equal(event.error_code, "budget.blocked");

    ({ c: b } = await connect(gw, await gw.token({ mode: "byok" })));
    b.start("b2");
    assert.equal((await b.end("b2")).type, "chat.complete");
  } finally {
    await c?.close();
    await b?.close();
    await gw.close();
  }
});

Deno.test("ws guardrails: an unknown model_hint or a voice model is request.invalid", async () => {
  const gw = await startGateway(testConfig({
    providers: { demo: { protocol: "mock" }, voice: { protocol: "realtime_mock" } },
    models: {
      "convergio-demo": {
        deployments: [{ provider: "demo", model: "demo-large" }],
        price: { input_per_1m: 2, output_per_1m: 8 },
      },
      "convergio-talk": {
        deployments: [{ provider: "voice", model: "rt" }],
        price: { input_per_1m: 32, output_per_1m: 64 },
      },
    },
    voice: { model: "convergio-talk" },
  }));
  let c: WsClient | undefined;
  try {
    ({ c } = await connect(gw, await gw.token()));
    c.start("h1", { prompt: "x", model_hint: "no-such-model" });
    const unknown = await c.end("h1");
    assert.equal(unknown.type, "error");
    assert.equal(unknown.code, "request.invalid");
    assert.match(String(unknown.message), /unknown model/);

    c.start("h2", { prompt: "x", model_hint: "convergio-talk" });
    const voice = await c.end("h2");
    assert.equal(voice.type, "error");
    assert.equal(voice.code, "request.invalid");
    assert.match(String(voice.message), /voice model/);

    c.start("h3", { prompt: "x", model_hint: "convergio-demo" });
    assert.equal((await c.end("h3")).type, "chat.complete");
  } finally {
    await c?.close();
    await gw.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Resume

Deno.test("ws resume: a dropped socket resumes with the frames it missed, exactly once, then live ones", async () => {
  const gw = await startGateway(testConfig({ providers: slow(0, 40) }));
  let c1: WsClient | undefined;
  let c2: WsClient | undefined;
  try {
    const token = await gw.token();
    const attempts0 = await metric(gw, "convergio_ws_reconnect_attempts_total", { kind: "chat" });
    const successes0 = await metric(gw, "convergio_ws_reconnect_successes_total", { kind: "chat" });
    const dropouts0 = await metric(gw, "convergio_ws_dropouts_total", { kind: "chat" });

    const opened = await connect(gw, token);
    c1 = opened.c;
    const sid = String(opened.ready.session_id);
    const prompt = "please keep talking for a while so the drop lands mid-stream";
    c1.start("r1", { prompt });
    await c1.until(
      (fs) => fs.filter((f) => f.type === "chat.token").length >= 3,
      "three tokens before the drop",
    );
    const seenBefore = c1.frames.slice();
    const lastSeen = Math.max(...seenBefore.map((f) => f.event_id));
    const closed = await c1.close(4000, "network gone");
    assert.equal(closed.code, 4000);
    assert.ok(
      !seenBefore.some((f) => f.type === "chat.complete"),
      "the drop happened mid-stream",
    );
    await eventually(
      async () =>
        await metric(gw, "convergio_ws_dropouts_total", { kind: "chat", reason: "4000" }) >
          dropouts0,
      "the dropout metric",
    );

    ({ c: c2 } = await connect(gw, token, {
      query: `session_id=${sid}&last_event_id=${lastSeen}`,
    }));
    const ready = c2.frames.findLast((f) => f.type === "session.ready")!;
    assert.equal(ready.session_id, sid);
    assert.equal(ready.resumed, true);
    assert.equal(ready.frames_lost, undefined);
    const done = await c2.end("r1");
    assert.equal(done.type, "chat.complete");
    assert.equal(done.finish_reason, "stop");

    // Every frame of the session arrived exactly once across the two sockets, in id order.
    assert.ok(c2.frames.every((f) => f.event_id > lastSeen), "nothing before last_event_id");
    assertIncreasing(c2.frames);
    const union = [...seenBefore, ...c2.frames].sort((a, b) => a.event_id - b.event_id);
    assert.deepEqual(
      union.map((f) => f.event_id),
      union.map((_, i) => i + 1),
      "no duplicate and no gap in event ids",
    );
    const text = union.filter((f) => f.request_id === "r1" && f.type === "chat.token")
      .map((f) => f.text).join("");
    assert.equal(text, answer(prompt));

    assert.equal(
      await metric(gw, "convergio_ws_reconnect_attempts_total", { kind: "chat" }),
      attempts0 + 1,
    );
    assert.equal(
      await metric(gw, "convergio_ws_reconnect_successes_total", { kind: "chat" }),
      successes0 + 1,
    );
    const event = await waitForEvent(gw, `${sid}:r1`);
    assert.equal(event.success, true);
    assert.equal(gw.events.length, 1, "one request, one usage event");

    // The resumed socket carries new requests.
    c2.start("r2", { prompt: "after resume" });
    assert.equal((await c2.end("r2")).type, "chat.complete");
    assert.equal(c2.text("r2"), answer("after resume"));
  } finally {
    await c1?.close();
    await c2?.close();
    await gw.close();
  }
});

Deno.test("ws resume: frames_lost when the replay buffer no longer has them", async () => {
  const gw = await startGateway(testConfig({ ws: { replay_frames: 3 } }));
  let c1: WsClient | undefined;
  let c2: WsClient | undefined;
  try {
    const token = await gw.token();
    const opened = await connect(gw, token);
    c1 = opened.c;
    const sid = String(opened.ready.session_id);
    await c1.close(4001);
    await eventually(() =>
      !gw.deps.edge!.sessions.find(sid, "chat", {
        tenant_id: "t1",
        user_id: "u1",
        roles: ["user"],
        mode: "byok",
      })?.attached, "the server noticed the drop");
    const successes0 = await metric(gw, "convergio_ws_reconnect_successes_total", { kind: "chat" });
    // Resume claiming to have seen only the first frame; the ring kept just 3 frames.
    ({ c: c2 } = await connect(gw, token, { query: `session_id=${sid}&last_event_id=0` }));
    const ready = c2.frames.findLast((f) => f.type === "session.ready")!;
    assert.equal(ready.resumed, true);
    assert.equal(ready.frames_lost, undefined, "only one frame so far: nothing lost");
    assert.equal(c2.frames[0].event_id, 1, "the whole ring was replayed");
    c2.start("x", { prompt: "many words in this prompt to make many frames" });
    await c2.end("x");
    const last = c2.lastEventId;
    await c2.close(4001);
    await eventually(() =>
      !gw.deps.edge!.sessions.find(sid, "chat", {
        tenant_id: "t1",
        user_id: "u1",
        roles: ["user"],
        mode: "byok",
      })?.attached, "the server noticed the second drop");

    let c3: WsClient | undefined;
    try {
      ({ c: c3 } = await connect(gw, token, { query: `session_id=${sid}&last_event_id=1` }));
      const again = c3.frames.findLast((f) => f.type === "session.ready")!;
      assert.equal(again.resumed, true);
      assert.equal(again.frames_lost, true);
      const replayed = c3.frames.filter((f) => f.event_id <= last);
      assert.deepEqual(replayed.map((f) => f.event_id), [last - 2, last - 1, last]);
      assert.equal(
        await metric(gw, "convergio_ws_reconnect_successes_total", { kind: "chat" }),
        successes0 + 1,
        "a resume with frames lost is not a success",
      );
    } finally {
      await c3?.close();
    }
  } finally {
    await c1?.close();
    await c2?.close();
    await gw.close();
  }
});

Deno.test("ws resume: another user's token cannot resume a session (410)", async () => {
  const gw = await startGateway();
  let c1: WsClient | undefined;
  let c2: WsClient | undefined;
  try {
    const opened = await connect(gw, await gw.token({ tenant: "t1", user: "alice" }));
    c1 = opened.c;
    const sid = String(opened.ready.session_id);
    await c1.close(4000);
    for (
      const other of [
        await gw.token({ tenant: "t1", user: "bob" }),
        await gw.token({ tenant: "t2", user: "alice" }),
      ]
    ) {
      const res = await rawUpgrade(gw, `/v1/ws?session_id=${sid}&last_event_id=1`, {
        authorization: `Bearer ${other}`,
      });
      assert.equal(res.status, 410);
      assert.equal((res.body.error as Record<string, unknown>).code, "session.expired");
    }
    // The owner still can.
    ({ c: c2 } = await connect(gw, await gw.token({ tenant: "t1", user: "alice" }), {
      query: `session_id=${sid}&last_event_id=1`,
    }));
    assert.equal(c2.frames.find((f) => f.type === "session.ready")?.resumed, true);
  } finally {
    await c1?.close();
    await c2?.close();
    await gw.close();
  }
});

Deno.test("ws resume: after the resume window → 410, and the in-flight request was cancelled and settled", async () => {
  const gw = await startGateway(testConfig({
    providers: slow(0, 50),
    ws: { resume_window_ms: 200 },
  }));
  let c: WsClient | undefined;
  try {
    const token = await gw.token();
    const opened = await connect(gw, token);
    c = opened.c;
    const sid = String(opened.ready.session_id);
    assert.equal(opened.ready.resume_window_ms, 200);
    c.start("w1", { prompt: "a long prompt ".repeat(10) });
    await c.waitFor((f) => f.type === "chat.token", "a token");
    await c.close(4000);

    const event = await waitForEvent(gw, `${sid}:w1`);
    assert.equal(event.success, false);
    assert.equal(event.error_code, "request.cancelled");
    assert.ok(event.output_tokens > 0);
    await eventually(() => gw.deps.edge!.sessions.size === 0, "the session ended");

    const res = await rawUpgrade(gw, `/v1/ws?session_id=${sid}&last_event_id=2`, {
      authorization: `Bearer ${token}`,
    });
    assert.equal(res.status, 410);
    assert.equal((res.body.error as Record<string, unknown>).code, "session.expired");
  } finally {
    await c?.close();
    await gw.close();
  }
});

Deno.test("ws resume: a normal close (1000) ends the session; a later resume → 410", async () => {
  const gw = await startGateway();
  let c: WsClient | undefined;
  try {
    const token = await gw.token();
    const dropouts0 = await metric(gw, "convergio_ws_dropouts_total");
    const opened = await connect(gw, token);
    c = opened.c;
    const sid = String(opened.ready.session_id);
    assert.equal((await c.close(1000, "bye")).code, 1000);
    await eventually(() => gw.deps.edge!.sessions.size === 0, "the session ended");
    const res = await rawUpgrade(gw, `/v1/ws?session_id=${sid}&last_event_id=1`, {
      authorization: `Bearer ${token}`,
    });
    assert.equal(res.status, 410);
    assert.equal((res.body.error as Record<string, unknown>).code, "session.expired");
    assert.equal(await metric(gw, "convergio_ws_dropouts_total"), dropouts0, "not a dropout");
  } finally {
    await c?.close();
    await gw.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Backpressure and idle timeout

Deno.test("ws backpressure: a reader past max_buffered_bytes gets stream.slow_consumer", async () => {
  const gw = await startGateway(testConfig({ ws: { max_buffered_bytes: 1 } }));
  let c: WsClient | undefined;
  try {
    ({ c } = await connect(gw, await gw.token()));
    const sid = String(c.frames[0].session_id);
    c.start("s1", { prompt: "word ".repeat(40).trim() });
    const event = await waitForEvent(gw, `${sid}:s1`);
    assert.equal(event.success, false);
    assert.equal(event.error_code, "stream.slow_consumer");
    // The client must learn that its stream ended: the error frame arrives (later is fine).
    const end = await c.end("s1");
    assert.equal(end.type, "error");
    assert.equal(end.code, "stream.slow_consumer");
    assert.equal(end.retryable, true);
  } finally {
    await c?.close();
    await gw.close();
  }
});

Deno.test("ws idle timeout: closes with 1000 'idle timeout', but not while a request is in flight", async () => {
  const gw = await startGateway(testConfig({
    providers: slow(0, 40),
    ws: { idle_timeout_ms: 300 },
  }));
  let c: WsClient | undefined;
  try {
    ({ c } = await connect(gw, await gw.token()));
    // This stream lasts longer than the idle timeout and must not be cut.
    c.start("i1", { prompt: "one two three four five six seven eight nine ten eleven twelve" });
    const done = await c.end("i1");
    assert.equal(done.type, "chat.complete");
    assert.equal(done.finish_reason, "stop");
    const closed = await Promise.race([
      c.closed,
      new Promise<undefined>((r) => setTimeout(() => r(undefined), 5_000)),
    ]);
    assert.ok(closed, "the idle socket was closed");
    assert.equal(closed.code, 1000);
    assert.equal(closed.reason, "idle timeout");
    await eventually(() => gw.deps.edge!.sessions.size === 0, "an idle close ends the session");
  } finally {
    await c?.close();
    await gw.close();
  }
});
