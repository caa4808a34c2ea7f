import assert from "node:assert/strict";
import { startGateway, testConfig, type TestGateway } from "../support/gateway.ts";

interface Frame {
  type: string;
  event_id: number;
  timestamp_ms: number;
  request_id?: string;
  [key: string]: unknown;
}

const SUBPROTOCOL = "convergio.v1";

class WsClient {
  readonly frames: Frame[] = [];
  readonly raw: unknown[] = [];
  readonly closed: Promise<CloseEvent>;
  #wake?: () => void;

  private constructor(readonly ws: WebSocket) {
    this.closed = new Promise((resolve) => ws.addEventListener("close", (e) => {
      this.#wake?.();
      resolve(e);
    }));
    ws.addEventListener("message", (e) => {
      this.raw.push(e.data);
      if (typeof e.data === "string") this.frames.push(JSON.parse(e.data));
      this.#wake?.();
    });
  }

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
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener("open", () => resolve(), { once: true });
      ws.addEventListener("error", () => reject(new Error("websocket failed to open")), {
        once: true,
      });
    });
    return client;
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  async waitFor(pred: (f: Frame) => boolean, what: string, timeoutMs = 5_000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const hit = this.frames.find(pred);
      if (hit) return hit;
      const left = deadline - Date.now();
      if (left <= 0 || this.ws.readyState === WebSocket.CLOSED) {
        throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.frames)}`);
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }

  async close(code = 1000, reason = ""): Promise<CloseEvent> {
    if (this.ws.readyState === WebSocket.CONNECTING || this.ws.readyState === WebSocket.OPEN) {
      this.ws.close(code, reason);
    }
    return await this.closed;
  }
}

Deno.test("probe", async () => {
  const gw = await startGateway(testConfig({ ws: { max_buffered_bytes: 1 } }));
  let c: WsClient | undefined;
  try {
    c = await WsClient.open(gw, await gw.token());
    await c.waitFor((f) => f.type === "session.ready", "ready");
    c.send({ type: "chat.start", request_id: "r1", prompt: "x ".repeat(100) });
    await new Promise((r) => setTimeout(r, 500));
    console.log(c.frames);
    console.log(gw.events);
  } finally {
    await c?.close();
    await gw.close();
  }
});
