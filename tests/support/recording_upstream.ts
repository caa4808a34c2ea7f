/**
 * A local fake upstream that records every request it receives, plus the
 * response builders and call/assert helpers the provider adapter tests share.
 * Each adapter test supplies only its own wire format (chunks, frames, errors).
 */
import assert from "node:assert/strict";
import type { ChatRequest } from "../../src/providers/chat_schema.ts";
import {
  type ProviderAdapter,
  ProviderError,
  type ProviderEvent,
  type UpstreamCall,
} from "../../src/providers/types.ts";
import { Secret } from "../../src/secret.ts";

// One copy for every test that needs a refused connection.
export { closedPort } from "./fake_openai.ts";

/** What the upstream saw of one request. */
export interface Received {
  method: string;
  path: string;
  /** Query parameters (Azure OpenAI carries `api-version` here). */
  query: Record<string, string>;
  headers: Record<string, string>;
  body: Record<string, unknown>;
}

export type Respond = (req: Request, received: Received) => Response | Promise<Response>;

export interface Upstream {
  origin: string;
  received: Received[];
}

/** Runs `fn` against a loopback server that answers with `respond` and records each request. */
export async function withUpstream(
  respond: Respond,
  fn: (up: Upstream) => Promise<void>,
): Promise<void> {
  const received: Received[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const url = new URL(req.url);
    const text = await req.text();
    const rec: Received = {
      method: req.method,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      headers: Object.fromEntries(req.headers),
      body: text ? JSON.parse(text) : {},
    };
    received.push(rec);
    return await respond(req, rec);
  });
  try {
    await fn({ origin: `http://127.0.0.1:${server.addr.port}`, received });
  } finally {
    await server.shutdown();
  }
}

/** A JSON response; `headers` adds to the content type (e.g. a provider's request id). */
export function json(
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

const encoder = new TextEncoder();

/** An SSE response whose body is written as the given raw pieces, one network write each. */
export function sseRaw(pieces: Array<string | Uint8Array>): Response {
  return new Response(
    new ReadableStream<Uint8Array>({
      start(controller) {
        for (const p of pieces) controller.enqueue(typeof p === "string" ? encoder.encode(p) : p);
        controller.close();
      },
    }),
    { headers: { "content-type": "text/event-stream; charset=utf-8" } },
  );
}

/**
 * `text` as UTF-8 cut into `size`-byte slices, so that written one by one
 * they split field names, JSON and multi-byte characters.
 */
export function splitBytes(text: string, size: number): Uint8Array[] {
  const bytes = encoder.encode(text);
  const pieces: Uint8Array[] = [];
  for (let i = 0; i < bytes.length; i += size) pieces.push(bytes.slice(i, i + size));
  return pieces;
}

/**
 * An SSE response that writes `text` and then stays open, like a model still
 * generating. `cancelled` settles once the client releases the body, so a test
 * can prove the adapter did not leave the upstream response hanging.
 */
export function stalledSse(text: string): { respond: () => Response; cancelled: Promise<void> } {
  let upstreamCancelled!: () => void;
  const cancelled = new Promise<void>((resolve) => upstreamCancelled = resolve);
  const respond = () =>
    new Response(
      new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(encoder.encode(text));
        },
        cancel() {
          upstreamCancelled();
        },
      }),
      { headers: { "content-type": "text/event-stream" } },
    );
  return { respond, cancelled };
}

// ---------------------------------------------------------------------------
// Calls and assertions.
// ---------------------------------------------------------------------------

export function makeCall(
  request: ChatRequest,
  signal = new AbortController().signal,
): UpstreamCall {
  return { request, maxOutputTokens: 1024, apiKey: new Secret("k"), signal };
}

export const WEATHER_TOOL = {
  type: "function" as const,
  function: {
    name: "get_weather",
    description: "Current weather for a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string" } },
      required: ["city"],
    },
  },
};

/** Drops undefined-valued keys so events compare by what they carry. */
function normalize(events: ProviderEvent[]): ProviderEvent[] {
  return JSON.parse(JSON.stringify(events));
}

/** Every event of a stream, and the error that ended it if any. */
export async function drain(
  iter: AsyncIterable<ProviderEvent>,
): Promise<{ events: ProviderEvent[]; error: unknown }> {
  const events: ProviderEvent[] = [];
  try {
    for await (const ev of iter) events.push(ev);
  } catch (error) {
    return { events: normalize(events), error };
  }
  return { events: normalize(events), error: undefined };
}

/** Drains a stream that must end cleanly; its events. */
export async function streamEvents(stream: AsyncIterable<ProviderEvent>): Promise<ProviderEvent[]> {
  const { events, error } = await drain(stream);
  assert.equal(error, undefined);
  return events;
}

export function assertProviderError(
  err: unknown,
  kind: ProviderError["kind"],
  message: string | RegExp,
  status?: number,
): void {
  assert.ok(err instanceof ProviderError, `expected a ProviderError, got ${String(err)}`);
  assert.equal(err.kind, kind);
  if (typeof message === "string") assert.equal(err.message, message);
  else assert.match(err.message, message);
  assert.equal(err.status, status);
}

/** `pending` rejects with a ProviderError of this kind, message and status. */
export async function assertRejectsProviderError(
  pending: Promise<unknown>,
  kind: ProviderError["kind"],
  message: string | RegExp,
  status?: number,
): Promise<void> {
  await assert.rejects(pending, (err) => {
    assertProviderError(err, kind, message, status);
    return true;
  });
}

/** The stream yields exactly `events`, then fails with this ProviderError. */
export async function assertStreamFails(
  stream: AsyncIterable<ProviderEvent>,
  events: ProviderEvent[],
  kind: ProviderError["kind"],
  message: string | RegExp,
  status?: number,
): Promise<void> {
  const got = await drain(stream);
  assert.deepEqual(got.events, events);
  assertProviderError(got.error, kind, message, status);
}

/** `pending` rejects with exactly `reason` (an abort must surface the caller's own reason). */
export async function assertRejectsWith(pending: Promise<unknown>, reason: unknown): Promise<void> {
  await assert.rejects(pending, (err) => {
    assert.equal(err, reason);
    return true;
  });
}

/**
 * An upstream that fails before any reply (an HTTP error, no listener) fails
 * both calls alike: complete() rejects, and stream() yields nothing and throws.
 */
export async function assertFailsBothWays(
  adapter: ProviderAdapter,
  request: ChatRequest,
  kind: ProviderError["kind"],
  message: string | RegExp,
  status?: number,
): Promise<void> {
  await assertRejectsProviderError(adapter.complete(makeCall(request)), kind, message, status);
  await assertStreamFails(adapter.stream(makeCall(request)), [], kind, message, status);
}

/**
 * Aborting after the first event rejects the next read with the caller's own
 * reason, ends the iteration, and releases the upstream body (`cancelled`).
 */
export async function assertAbortsMidStream(
  open: (signal: AbortSignal) => AsyncIterable<ProviderEvent>,
  first: ProviderEvent,
  reason: unknown,
  cancelled: Promise<void>,
): Promise<void> {
  const controller = new AbortController();
  const it = open(controller.signal)[Symbol.asyncIterator]();
  assert.deepEqual(await it.next(), { done: false, value: first });

  controller.abort(reason);
  await assertRejectsWith(it.next(), reason);
  assert.deepEqual(await it.next(), { done: true, value: undefined });
  // The upstream response was released, not left hanging.
  await cancelled;
}

// ---------------------------------------------------------------------------
// Tables of upstream answers an adapter must refuse, one Deno.test per case.
// ---------------------------------------------------------------------------

export interface Failure {
  /** The Deno.test name. */
  name: string;
  respond: Respond;
  kind: ProviderError["kind"];
  message: string | RegExp;
  status?: number;
}

export interface StreamFailure extends Failure {
  /** What the stream yields before it throws. */
  events: ProviderEvent[];
}

/** One Deno.test per case, each against its own upstream answering `respond`. */
function testEachUpstream<C extends Failure>(
  cases: C[],
  check: (c: C, origin: string) => Promise<void>,
): void {
  for (const c of cases) {
    Deno.test(c.name, () => withUpstream(c.respond, (up) => check(c, up.origin)));
  }
}

/** complete(request) against each case's upstream rejects with its ProviderError. */
export function testCompleteFailures(
  adapter: (origin: string) => ProviderAdapter,
  request: ChatRequest,
  cases: Failure[],
): void {
  testEachUpstream(cases, async (c, origin) => {
    const pending = adapter(origin).complete(makeCall(request));
    await assertRejectsProviderError(pending, c.kind, c.message, c.status);
  });
}

/** stream(request) against each case's upstream yields its events, then throws its ProviderError. */
export function testStreamFailures(
  adapter: (origin: string) => ProviderAdapter,
  request: ChatRequest,
  cases: StreamFailure[],
): void {
  testEachUpstream(cases, async (c, origin) => {
    const stream = adapter(origin).stream(makeCall(request));
    await assertStreamFails(stream, c.events, c.kind, c.message, c.status);
  });
}
