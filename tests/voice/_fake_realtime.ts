import assert from "node:assert/strict";
import { decodeBase64, encodeBase64 } from "../../src/voice/audio.ts";
import { createRealtimeOpenAI } from "../../src/voice/realtime_openai.ts";
import type { RealtimeEvent, RealtimeOpenOptions, RealtimeSession } from "../../src/voice/types.ts";
import { bounded } from "./_voice_support.ts";

export type Wire = Record<string, unknown>;

/** PCM16 at 24 kHz: `seconds` of a ramp. */
export function pcm24k(seconds: number): Uint8Array {
  const samples = Math.round(seconds * 24_000);
  const out = new Uint8Array(samples * 2);
  const view = new DataView(out.buffer);
  for (let i = 0; i < samples; i++) view.setInt16(i * 2, (i % 200) * 100 - 10_000, true);
  return out;
}

export interface FakeOptions {
  /** The key the fake accepts as `Authorization: Bearer`. */
  apiKey?: string;
  /** Answers `response.create`; defaults to a full turn. */
  onResponse?: (socket: WebSocket, fake: FakeRealtime) => void;
  /** When set, upgrades wait for it (a slow provider handshake). */
  holdUpgrade?: Promise<void>;
}

/**
 * A local stand-in for the OpenAI Realtime WebSocket API: checks the upgrade's
 * headers and query, records what the client sends, and answers each
 * `response.create` with the real event names.
 */
export class FakeRealtime {
  readonly received: Wire[] = [];
  readonly upgrades: Array<{ auth: string | null; beta: string | null; model: string | null }> = [];
  readonly appended: Uint8Array[] = [];
  readonly sockets: WebSocket[] = [];
  /** Close codes of the sockets the client closed, in order. */
  readonly closes: number[] = [];
  readonly replyAudio = pcm24k(0.1);
  readonly apiKey: string;
  #server: Deno.HttpServer<Deno.NetAddr>;
  #closed: Promise<void>[] = [];
  #waiters: Array<() => void> = [];

  constructor(readonly opts: FakeOptions = {}) {
    this.apiKey = opts.apiKey ?? "sk-test-realtime";
    this.#server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
      const url = new URL(req.url);
      const upgrade = {
        auth: req.headers.get("authorization"),
        beta: req.headers.get("openai-beta"),
        model: url.searchParams.get("model"),
      };
      this.upgrades.push(upgrade);
      this.#wake();
      if (upgrade.auth !== `Bearer ${this.apiKey}`) {
        return new Response("no key", { status: 401 });
      }
      if (upgrade.beta !== "realtime=v1") return new Response("no beta", { status: 400 });
      if (!upgrade.model) return new Response("no model", { status: 400 });
      if (this.opts.holdUpgrade) await this.opts.holdUpgrade;
      const { socket, response } = Deno.upgradeWebSocket(req);
      this.sockets.push(socket);
      this.#closed.push(
        new Promise((r) =>
          socket.addEventListener("close", (e) => {
            this.closes.push(e.code);
            this.#wake();
            r();
          })
        ),
      );
      socket.onmessage = (m) => {
        const ev = JSON.parse(String(m.data)) as Wire;
        this.received.push(ev);
        if (ev.type === "input_audio_buffer.append") {
          this.appended.push(decodeBase64(String(ev.audio)));
        }
        if (ev.type === "response.create") (this.opts.onResponse ?? fullTurn)(socket, this);
        this.#wake();
      };
      return response;
    });
  }

  #wake() {
    for (const w of this.#waiters.splice(0)) w();
  }

  get url(): string {
    return `ws://127.0.0.1:${this.#server.addr.port}/v1/realtime`;
  }

  /** Events of `type` the client sent so far. */
  count(type: string): number {
    return this.received.filter((e) => e.type === type).length;
  }

  /** Waits (bounded) until `check` holds. */
  async until(check: () => boolean, what: string, ms = 5_000): Promise<void> {
    await bounded(
      (async () => {
        while (!check()) await new Promise<void>((r) => this.#waiters.push(r));
      })(),
      ms,
      what,
    );
  }

  /** Waits until the client has sent an event of `type`. */
  async sent(type: string): Promise<Wire> {
    await this.until(() => this.received.some((e) => e.type === type), `client event ${type}`);
    return this.received.find((e) => e.type === type)!;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) {
      if (s.readyState === WebSocket.OPEN) s.close(1000);
    }
    // a socket whose client gave up during the handshake never opens, nor closes
    const opened = this.#closed.filter((_, i) =>
      this.sockets[i].readyState !== WebSocket.CONNECTING
    );
    await bounded(Promise.all(opened), 5_000, "fake server sockets closing");
    await this.#server.shutdown();
  }
}

/** A turn as OpenAI sends it: transcription, transcript deltas, audio deltas, response.done. */
export function fullTurn(socket: WebSocket, fake: FakeRealtime) {
  const send = (ev: Wire) => socket.send(JSON.stringify(ev));
  send({ type: "response.created", response: { id: "resp_1" } });
  send({
    type: "conversation.item.input_audio_transcription.completed",
    item_id: "item_1",
    content_index: 0,
    transcript: "What is the weather?",
  });
  send({ type: "response.audio_transcript.delta", response_id: "resp_1", delta: "It is " });
  send({
    type: "response.audio.delta",
    response_id: "resp_1",
    delta: encodeBase64(fake.replyAudio),
  });
  send({ type: "response.audio_transcript.delta", response_id: "resp_1", delta: "sunny." });
  send({
    type: "response.audio.delta",
    response_id: "resp_1",
    delta: encodeBase64(fake.replyAudio),
  });
  send({ type: "response.audio.done", response_id: "resp_1" });
  send({ type: "rate_limits.updated", rate_limits: [] });
  send({
    type: "response.done",
    response: {
      id: "resp_1",
      status: "completed",
      usage: { total_tokens: 57, input_tokens: 42, output_tokens: 15 },
    },
  });
}

/** A gateway provider entry (realtime_openai) pointing at `fake`, with its key unless told. */
export function openaiProvider(fake: { url: string; apiKey?: string }, apiKey?: string) {
  return { protocol: "realtime_openai", base_url: fake.url, api_key: apiKey ?? fake.apiKey };
}

export const REALTIME_MODEL = "gpt-4o-realtime-preview";

/** Adapter open options: push-to-talk pcm16 at 24 kHz with the fake's default key. */
export const adapterOptions = (signal: AbortSignal, extra: Partial<RealtimeOpenOptions> = {}) => ({
  model: REALTIME_MODEL,
  codec: "pcm16" as const,
  sampleRate: 24_000,
  vad: false,
  apiKey: "sk-test-realtime",
  signal,
  ...extra,
});

/** What a test of one adapter session gets. */
export interface AdapterSession {
  fake: FakeRealtime;
  session: RealtimeSession;
  ac: AbortController;
}

/**
 * Starts a FakeRealtime with `fakeOpts`, opens an OpenAI Realtime adapter
 * session against it (at `url(fake)`, with `open` options) and runs `body`;
 * the session, the signal and the fake are closed after it.
 */
export async function withAdapterSession(
  fakeOpts: FakeOptions,
  body: (s: AdapterSession) => Promise<void>,
  opts: { url?: (fake: FakeRealtime) => string; open?: Partial<RealtimeOpenOptions> } = {},
): Promise<void> {
  const fake = new FakeRealtime(fakeOpts);
  const ac = new AbortController();
  let session: RealtimeSession | undefined;
  try {
    const adapter = createRealtimeOpenAI(opts.url?.(fake) ?? fake.url);
    session = await bounded(adapter.open(adapterOptions(ac.signal, opts.open)), 5_000, "open");
    await body({ fake, session, ac });
  } finally {
    session?.close();
    ac.abort();
    await fake.close();
  }
}

/** Reads events until one matches `until` (or the iterator ends). */
export async function readUntil(
  session: RealtimeSession,
  until: (ev: RealtimeEvent) => boolean,
): Promise<RealtimeEvent[]> {
  const out: RealtimeEvent[] = [];
  await bounded(
    (async () => {
      for await (const ev of session.events) {
        out.push(ev);
        if (until(ev)) break;
      }
    })(),
    5_000,
    "realtime events",
  );
  return out;
}

/** Reads every event until the iterator fails, as `check` expects; returns what was read. */
export async function readUntilFailure(
  session: RealtimeSession,
  check: (err: unknown) => boolean,
): Promise<RealtimeEvent[]> {
  const seen: RealtimeEvent[] = [];
  await assert.rejects(
    bounded((async () => {
      for await (const ev of session.events) seen.push(ev);
    })()),
    check,
  );
  return seen;
}

/** The close code the fake's first socket will see. */
export function serverCloseCode(fake: FakeRealtime): Promise<number> {
  return new Promise<number>((r) => fake.sockets[0].addEventListener("close", (e) => r(e.code)));
}

/** A handler that sends `events` (objects as JSON, strings as they are). */
export function sends(...events: Array<Wire | string>) {
  return (socket: WebSocket) => {
    for (const ev of events) socket.send(typeof ev === "string" ? ev : JSON.stringify(ev));
  };
}
