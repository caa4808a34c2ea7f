import assert from "node:assert/strict";
import type { ChatRequest } from "../../src/providers/chat_schema.ts";
import { createOpenAIAdapter, openaiEndpoint } from "../../src/providers/openai_openai.ts";
import { azureOpenAIEndpoint } from "../../src/providers/openai_azureopenai.ts";
import {
  collectStream,
  type ProviderAdapter,
  ProviderError,
  type ProviderEvent,
  type UpstreamCall,
} from "../../src/providers/types.ts";
import { Secret } from "../../src/secret.ts";

// ---------------------------------------------------------------------------
// A local fake OpenAI Chat Completions upstream.
// ---------------------------------------------------------------------------

interface Received {
  method: string;
  path: string;
  query: Record<string, string>;
  headers: Record<string, string>;
  body: Record<string, unknown>;
}

type Respond = (req: Request, received: Received) => Response | Promise<Response>;

interface Upstream {
  origin: string;
  received: Received[];
}

async function withUpstream(respond: Respond, fn: (up: Upstream) => Promise<void>) {
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

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json" },
  });
}

const encoder = new TextEncoder();

/** An SSE response whose body is written as the given raw pieces, in order. */
function sseRaw(pieces: Array<string | Uint8Array>): Response {
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

/** `data: {json}\n\n` lines, as OpenAI sends them, one network write per line. */
function sse(chunks: Array<unknown>, done = true): Response {
  const lines = chunks.map((c) => `data: ${JSON.stringify(c)}\n\n`);
  if (done) lines.push("data: [DONE]\n\n");
  return sseRaw(lines);
}

const CHUNK_ID = "chatcmpl-9zQ3pQ8uXx1";
const MODEL_SNAPSHOT = "gpt-4o-mini-2024-07-18";

function chunk(delta: Record<string, unknown>, finish_reason: string | null = null) {
  return {
    id: CHUNK_ID,
    object: "chat.completion.chunk",
    created: 1718000000,
    model: MODEL_SNAPSHOT,
    system_fingerprint: "fp_0ba0d124f1",
    choices: [{ index: 0, delta, logprobs: null, finish_reason }],
    usage: null,
  };
}

function usageChunk(prompt: number, completion: number) {
  return {
    id: CHUNK_ID,
    object: "chat.completion.chunk",
    created: 1718000000,
    model: MODEL_SNAPSHOT,
    system_fingerprint: "fp_0ba0d124f1",
    choices: [],
    usage: {
      prompt_tokens: prompt,
      completion_tokens: completion,
      total_tokens: prompt + completion,
      prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
      completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0 },
    },
  };
}

function completion(
  message: Record<string, unknown>,
  finish_reason: string,
  usage = { prompt_tokens: 19, completion_tokens: 10, total_tokens: 29 },
) {
  return {
    id: "chatcmpl-9zQ3pQ8uXx2",
    object: "chat.completion",
    created: 1718000000,
    model: MODEL_SNAPSHOT,
    system_fingerprint: "fp_0ba0d124f1",
    choices: [{ index: 0, message: { refusal: null, ...message }, logprobs: null, finish_reason }],
    usage,
  };
}

function openaiError(status: number, message: string, type: string, code: string | null) {
  return json(status, { error: { message, type, param: null, code } });
}

// ---------------------------------------------------------------------------
// Call helpers.
// ---------------------------------------------------------------------------

function makeCall(request: ChatRequest, signal = new AbortController().signal): UpstreamCall {
  return { request, maxOutputTokens: 1024, apiKey: new Secret("k"), signal };
}

const WEATHER_TOOL = {
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

async function drain(
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

function assertProviderError(
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

/** A port on 127.0.0.1 that nothing listens on any more. */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

function openai(origin: string): ProviderAdapter {
  // Trailing slashes in a configured base URL must not double up in the path.
  return createOpenAIAdapter(openaiEndpoint(`${origin}/v1/`));
}

// ---------------------------------------------------------------------------
// complete()
// ---------------------------------------------------------------------------

Deno.test("openai complete: posts the request with bearer auth and maps a text reply", async () => {
  await withUpstream(
    () =>
      json(
        200,
        completion(
          { role: "assistant", content: "Hello! How can I help?" },
          "stop",
          { prompt_tokens: 13, completion_tokens: 7, total_tokens: 20 },
        ),
      ),
    async (up) => {
      const request: ChatRequest = {
        model: "gpt-4o-mini",
        messages: [
          { role: "system", content: "Be brief." },
          { role: "user", content: "Hi" },
        ],
        temperature: 0.2,
        max_tokens: 50,
        user: "tenant-7",
        // A client's own stream flags must never reach a non-streaming call.
        stream: true,
        stream_options: { include_usage: false },
      };
      const result = await openai(up.origin).complete(makeCall(request));

      assert.equal(up.received.length, 1);
      const sent = up.received[0];
      assert.equal(sent.method, "POST");
      assert.equal(sent.path, "/v1/chat/completions");
      assert.equal(sent.headers["authorization"], "Bearer k");
      assert.equal(sent.headers["content-type"], "application/json");
      assert.equal(sent.headers["api-key"], undefined);
      assert.deepEqual(sent.body, {
        model: "gpt-4o-mini",
        messages: [
          { role: "system", content: "Be brief." },
          { role: "user", content: "Hi" },
        ],
        temperature: 0.2,
        max_tokens: 50,
        user: "tenant-7",
      });

      assert.deepEqual(result, {
        text: "Hello! How can I help?",
        tool_calls: [],
        finish_reason: "stop",
        usage: { input_tokens: 13, output_tokens: 7 },
        model: MODEL_SNAPSHOT,
      });
    },
  );
});

Deno.test("openai complete: maps tool_calls with JSON-string arguments and finish_reason tool_calls", async () => {
  const toolCalls = [
    {
      id: "call_Qx1",
      type: "function",
      function: { name: "get_weather", arguments: '{"city":"Paris"}' },
    },
    {
      id: "call_Qx2",
      type: "function",
      function: { name: "get_weather", arguments: '{"city":"Tōkyō"}' },
    },
  ];
  await withUpstream(
    () =>
      json(
        200,
        completion({ role: "assistant", content: null, tool_calls: toolCalls }, "tool_calls", {
          prompt_tokens: 82,
          completion_tokens: 47,
          total_tokens: 129,
        }),
      ),
    async (up) => {
      const request: ChatRequest = {
        model: "gpt-4o-mini",
        messages: [{ role: "user", content: "Weather in Paris and Tokyo?" }],
        tools: [WEATHER_TOOL],
        tool_choice: "auto",
      };
      const result = await openai(up.origin).complete(makeCall(request));

      assert.deepEqual(up.received[0].body, request);
      assert.equal(result.text, null);
      assert.deepEqual(result.tool_calls, toolCalls);
      assert.equal(typeof result.tool_calls[0].function.arguments, "string");
      assert.deepEqual(JSON.parse(result.tool_calls[1].function.arguments), { city: "Tōkyō" });
      assert.equal(result.finish_reason, "tool_calls");
      assert.deepEqual(result.usage, { input_tokens: 82, output_tokens: 47 });
      assert.equal(result.model, MODEL_SNAPSHOT);
    },
  );
});

Deno.test("openai complete: maps length and content_filter finish reasons", async () => {
  const reasons = ["length", "content_filter", "stop"];
  let next = 0;
  await withUpstream(
    () => json(200, completion({ role: "assistant", content: "partial" }, reasons[next++])),
    async (up) => {
      const adapter = openai(up.origin);
      const request: ChatRequest = {
        model: "gpt-4o-mini",
        messages: [{ role: "user", content: "x" }],
      };
      const got = [];
      for (const _ of reasons) got.push((await adapter.complete(makeCall(request))).finish_reason);
      assert.deepEqual(got, ["length", "content_filter", "stop"]);
      assert.equal(up.received.length, 3);
    },
  );
});

Deno.test("openai complete: a body without choices is a server ProviderError", async () => {
  await withUpstream(
    () => json(200, { id: "chatcmpl-x", object: "chat.completion", model: "gpt-4o", choices: [] }),
    async (up) => {
      const request: ChatRequest = { model: "gpt-4o", messages: [{ role: "user", content: "x" }] };
      await assert.rejects(
        openai(up.origin).complete(makeCall(request)),
        (err) => {
          assertProviderError(err, "server", "upstream response has no choices");
          return true;
        },
      );
    },
  );
});

Deno.test("openai complete: an unreadable 200 body is a server ProviderError", async () => {
  await withUpstream(
    () => new Response("<html>gateway hiccup</html>", { status: 200 }),
    async (up) => {
      const request: ChatRequest = { model: "gpt-4o", messages: [{ role: "user", content: "x" }] };
      await assert.rejects(
        openai(up.origin).complete(makeCall(request)),
        (err) => {
          assertProviderError(err, "server", /^upstream sent an unreadable body: /);
          return true;
        },
      );
    },
  );
});

Deno.test("openai: no api key means no authorization header", async () => {
  await withUpstream(
    () => json(200, completion({ role: "assistant", content: "local" }, "stop")),
    async (up) => {
      const call = makeCall({ model: "llama3", messages: [{ role: "user", content: "x" }] });
      delete call.apiKey;
      const result = await openai(up.origin).complete(call);
      assert.equal(result.text, "local");
      assert.equal(up.received[0].headers["authorization"], undefined);
    },
  );
});

// ---------------------------------------------------------------------------
// HTTP and transport errors
// ---------------------------------------------------------------------------

const HTTP_ERRORS = [
  {
    status: 400,
    kind: "client",
    message: "Invalid value for 'temperature': expected a number between 0 and 2.",
    type: "invalid_request_error",
    code: "invalid_value",
  },
  {
    status: 401,
    kind: "auth",
    message: "Incorrect API key provided: k. You can find your API key at " +
      "https://platform.openai.com/account/api-keys.",
    type: "invalid_request_error",
    code: "invalid_api_key",
  },
  {
    status: 429,
    kind: "rate_limited",
    message: "Rate limit reached for gpt-4o-mini in organization org-abc on tokens per min " +
      "(TPM): Limit 200000, Used 199500, Requested 900. Please try again in 120ms.",
    type: "tokens",
    code: "rate_limit_exceeded",
  },
  {
    status: 500,
    kind: "server",
    message: "The server had an error while processing your request. Sorry about that!",
    type: "server_error",
    code: null,
  },
] as const;

Deno.test("openai errors: HTTP error statuses become classified ProviderErrors (complete and stream)", async () => {
  let current: (typeof HTTP_ERRORS)[number] = HTTP_ERRORS[0];
  await withUpstream(
    () => openaiError(current.status, current.message, current.type, current.code),
    async (up) => {
      const adapter = openai(up.origin);
      const request: ChatRequest = {
        model: "gpt-4o-mini",
        messages: [{ role: "user", content: "x" }],
      };
      for (const e of HTTP_ERRORS) {
        current = e;
        await assert.rejects(adapter.complete(makeCall(request)), (err) => {
          assertProviderError(err, e.kind, e.message, e.status);
          return true;
        });
        const { events, error } = await drain(adapter.stream(makeCall(request)));
        assert.deepEqual(events, []);
        assertProviderError(error, e.kind, e.message, e.status);
      }
      assert.equal(up.received.length, HTTP_ERRORS.length * 2);
    },
  );
});

Deno.test("openai errors: a non-JSON error body falls back to the HTTP status", async () => {
  await withUpstream(
    () => new Response("<html><body>502 Bad Gateway</body></html>", { status: 502 }),
    async (up) => {
      const request: ChatRequest = { model: "gpt-4o", messages: [{ role: "user", content: "x" }] };
      await assert.rejects(openai(up.origin).complete(makeCall(request)), (err) => {
        assertProviderError(err, "server", "upstream returned HTTP 502", 502);
        return true;
      });
    },
  );
});

Deno.test("openai errors: an unreachable upstream is a connect ProviderError", async () => {
  const adapter = createOpenAIAdapter(openaiEndpoint(`http://127.0.0.1:${closedPort()}/v1`));
  const request: ChatRequest = { model: "gpt-4o", messages: [{ role: "user", content: "x" }] };
  await assert.rejects(adapter.complete(makeCall(request)), (err) => {
    assertProviderError(err, "connect", /^cannot reach upstream: /);
    return true;
  });
  const { events, error } = await drain(adapter.stream(makeCall(request)));
  assert.deepEqual(events, []);
  assertProviderError(error, "connect", /^cannot reach upstream: /);
});

// ---------------------------------------------------------------------------
// stream()
// ---------------------------------------------------------------------------

Deno.test("openai stream: sends stream flags and yields text, tool_call fragments and one done", async () => {
  const wire = [
    chunk({ role: "assistant", content: "", refusal: null }),
    chunk({ content: "Let me " }),
    chunk({ content: "check." }),
    chunk({
      tool_calls: [{
        index: 0,
        id: "call_A1",
        type: "function",
        function: { name: "get_weather", arguments: "" },
      }],
    }),
    chunk({ tool_calls: [{ index: 0, function: { arguments: '{"ci' } }] }),
    chunk({ tool_calls: [{ index: 0, function: { arguments: 'ty": "Paris"}' } }] }),
    chunk({
      tool_calls: [{
        index: 1,
        id: "call_B2",
        type: "function",
        function: { name: "get_weather", arguments: "" },
      }],
    }),
    chunk({ tool_calls: [{ index: 1, function: { arguments: '{"city": "Rome"}' } }] }),
    chunk({}, "tool_calls"),
    usageChunk(91, 58),
  ];
  await withUpstream(() => sse(wire), async (up) => {
    const request: ChatRequest = {
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "Weather in Paris and Rome?" }],
      tools: [WEATHER_TOOL],
      // The client's own stream flags are replaced by the adapter's.
      stream: false,
      stream_options: { include_usage: false },
    };
    const { events, error } = await drain(openai(up.origin).stream(makeCall(request)));
    assert.equal(error, undefined);

    const sent = up.received[0];
    assert.equal(sent.path, "/v1/chat/completions");
    assert.equal(sent.headers["authorization"], "Bearer k");
    assert.deepEqual(sent.body, {
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "Weather in Paris and Rome?" }],
      tools: [WEATHER_TOOL],
      stream: true,
      stream_options: { include_usage: true },
    });

    assert.deepEqual(events, [
      { type: "text", text: "Let me " },
      { type: "text", text: "check." },
      { type: "tool_call", index: 0, id: "call_A1", name: "get_weather", arguments: "" },
      { type: "tool_call", index: 0, arguments: '{"ci' },
      { type: "tool_call", index: 0, arguments: 'ty": "Paris"}' },
      { type: "tool_call", index: 1, id: "call_B2", name: "get_weather", arguments: "" },
      { type: "tool_call", index: 1, arguments: '{"city": "Rome"}' },
      {
        type: "done",
        finish_reason: "tool_calls",
        usage: { input_tokens: 91, output_tokens: 58 },
        model: MODEL_SNAPSHOT,
      },
    ]);

    // The fragments fold back into complete OpenAI tool calls.
    const folded = await collectStream((async function* () {
      yield* events;
    })());
    assert.deepEqual(folded.tool_calls, [
      {
        id: "call_A1",
        type: "function",
        function: { name: "get_weather", arguments: '{"city": "Paris"}' },
      },
      {
        id: "call_B2",
        type: "function",
        function: { name: "get_weather", arguments: '{"city": "Rome"}' },
      },
    ]);
  });
});

Deno.test("openai stream: SSE split at arbitrary byte boundaries, CRLF and comments still parse", async () => {
  const text = [
    ": OPENROUTER PROCESSING\r\n\r\n",
    `data: ${JSON.stringify(chunk({ role: "assistant", content: "" }))}\r\n\r\n`,
    `data: ${JSON.stringify(chunk({ content: "Café " }))}\r\n\r\n`,
    `data: ${JSON.stringify(chunk({ content: "🚀 launch" }))}\r\n\r\n`,
    `data: ${JSON.stringify(chunk({}, "length"))}\r\n\r\n`,
    `data: ${JSON.stringify(usageChunk(5, 3))}\r\n\r\n`,
    "data: [DONE]\r\n\r\n",
  ].join("");
  const bytes = encoder.encode(text);
  const pieces: Uint8Array[] = [];
  // Seven-byte slices cut through field names, JSON and multi-byte characters.
  for (let i = 0; i < bytes.length; i += 7) pieces.push(bytes.slice(i, i + 7));

  await withUpstream(() => sseRaw(pieces), async (up) => {
    const request: ChatRequest = {
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "go" }],
    };
    const { events, error } = await drain(openai(up.origin).stream(makeCall(request)));
    assert.equal(error, undefined);
    assert.deepEqual(events, [
      { type: "text", text: "Café " },
      { type: "text", text: "🚀 launch" },
      {
        type: "done",
        finish_reason: "length",
        usage: { input_tokens: 5, output_tokens: 3 },
        model: MODEL_SNAPSHOT,
      },
    ]);
  });
});

Deno.test("openai stream: a stream cut off before finish_reason and [DONE] throws", async () => {
  await withUpstream(
    () =>
      sse([chunk({ role: "assistant", content: "" }), chunk({ content: "Half a sent" })], false),
    async (up) => {
      const request: ChatRequest = {
        model: "gpt-4o-mini",
        messages: [{ role: "user", content: "x" }],
      };
      const { events, error } = await drain(openai(up.origin).stream(makeCall(request)));
      assert.deepEqual(events, [{ type: "text", text: "Half a sent" }]);
      assertProviderError(error, "server", "upstream stream ended before finishing");
    },
  );
});

Deno.test("openai stream: a malformed JSON data line throws ProviderError", async () => {
  await withUpstream(
    () =>
      sseRaw([
        `data: ${JSON.stringify(chunk({ role: "assistant", content: "" }))}\n\n`,
        `data: ${JSON.stringify(chunk({ content: "ok" }))}\n\n`,
        'data: {"id":"chatcmpl-9zQ3pQ8uXx1","object":"chat.completion.chunk","choices":[{\n\n',
        `data: ${JSON.stringify(chunk({}, "stop"))}\n\n`,
        "data: [DONE]\n\n",
      ]),
    async (up) => {
      const request: ChatRequest = {
        model: "gpt-4o-mini",
        messages: [{ role: "user", content: "x" }],
      };
      const { events, error } = await drain(openai(up.origin).stream(makeCall(request)));
      assert.deepEqual(events, [{ type: "text", text: "ok" }]);
      assertProviderError(error, "server", "upstream sent a malformed stream event");
    },
  );
});

Deno.test("openai stream: an in-stream error object throws ProviderError with its message", async () => {
  await withUpstream(
    () =>
      sse([
        chunk({ role: "assistant", content: "" }),
        chunk({ content: "Once upon" }),
        {
          error: {
            message: "The server had an error while processing your request.",
            type: "server_error",
            param: null,
            code: null,
          },
        },
      ]),
    async (up) => {
      const request: ChatRequest = {
        model: "gpt-4o-mini",
        messages: [{ role: "user", content: "x" }],
      };
      const { events, error } = await drain(openai(up.origin).stream(makeCall(request)));
      assert.deepEqual(events, [{ type: "text", text: "Once upon" }]);
      assertProviderError(
        error,
        "server",
        "The server had an error while processing your request.",
      );
    },
  );
});

Deno.test("openai stream: aborting mid-stream rejects iteration with the abort reason", async () => {
  let upstreamCancelled!: () => void;
  const cancelled = new Promise<void>((resolve) => upstreamCancelled = resolve);
  await withUpstream(
    () =>
      new Response(
        new ReadableStream<Uint8Array>({
          start(controller) {
            controller.enqueue(
              encoder.encode(
                `data: ${JSON.stringify(chunk({ role: "assistant", content: "" }))}\n\n` +
                  `data: ${JSON.stringify(chunk({ content: "first" }))}\n\n`,
              ),
            );
            // Then nothing more: the upstream is still "thinking".
          },
          cancel() {
            upstreamCancelled();
          },
        }),
        { headers: { "content-type": "text/event-stream" } },
      ),
    async (up) => {
      const controller = new AbortController();
      const request: ChatRequest = {
        model: "gpt-4o-mini",
        messages: [{ role: "user", content: "x" }],
      };
      const it = openai(up.origin).stream(makeCall(request, controller.signal))[
        Symbol.asyncIterator
      ]();
      assert.deepEqual(await it.next(), { done: false, value: { type: "text", text: "first" } });

      const reason = new DOMException("client went away", "AbortError");
      controller.abort(reason);
      await assert.rejects(it.next(), (err) => {
        assert.equal(err, reason);
        return true;
      });
      assert.deepEqual(await it.next(), { done: true, value: undefined });
      // The upstream response was released, not left hanging.
      await cancelled;
    },
  );
});

Deno.test("openai complete: aborting while waiting for headers rejects with the abort reason", async () => {
  let arrived!: () => void;
  const requestArrived = new Promise<void>((resolve) => arrived = resolve);
  await withUpstream(
    async (req) => {
      arrived();
      await new Promise((resolve) => req.signal.addEventListener("abort", resolve));
      return json(200, completion({ role: "assistant", content: "too late" }, "stop"));
    },
    async (up) => {
      const controller = new AbortController();
      const request: ChatRequest = {
        model: "gpt-4o-mini",
        messages: [{ role: "user", content: "x" }],
      };
      const pending = openai(up.origin).complete(makeCall(request, controller.signal));
      await requestArrived;
      const reason = new Error("deadline exceeded");
      controller.abort(reason);
      await assert.rejects(pending, (err) => {
        assert.equal(err, reason);
        return true;
      });
    },
  );
});

// ---------------------------------------------------------------------------
// Azure OpenAI
// ---------------------------------------------------------------------------

Deno.test("azure complete: deployment path, api-version query and api-key header", async () => {
  await withUpstream(
    () =>
      json(200, {
        ...completion({ role: "assistant", content: "Bonjour" }, "stop", {
          prompt_tokens: 9,
          completion_tokens: 2,
          total_tokens: 11,
        }),
        model: "gpt-4o-2024-08-06",
        prompt_filter_results: [{ prompt_index: 0, content_filter_results: {} }],
      }),
    async (up) => {
      const adapter = createOpenAIAdapter(
        azureOpenAIEndpoint(`${up.origin}/`, "2024-10-21"),
      );
      const request: ChatRequest = {
        model: "prod gpt-4o",
        messages: [{ role: "user", content: "Say hello in French" }],
      };
      const result = await adapter.complete(makeCall(request));

      const sent = up.received[0];
      assert.equal(sent.method, "POST");
      // The deployment name is percent-encoded into one path segment.
      assert.equal(sent.path, "/openai/deployments/prod%20gpt-4o/chat/completions");
      assert.deepEqual(sent.query, { "api-version": "2024-10-21" });
      assert.equal(sent.headers["api-key"], "k");
      assert.equal(sent.headers["authorization"], undefined);
      assert.deepEqual(sent.body, request);

      assert.deepEqual(result, {
        text: "Bonjour",
        tool_calls: [],
        finish_reason: "stop",
        usage: { input_tokens: 9, output_tokens: 2 },
        model: "gpt-4o-2024-08-06",
      });
    },
  );
});

Deno.test("azure stream: prompt-filter preamble chunk is skipped and usage is reported", async () => {
  const azureChunk = (delta: Record<string, unknown>, finish: string | null = null) => ({
    ...chunk(delta, finish),
    model: "gpt-4o-2024-08-06",
    choices: [{
      index: 0,
      delta,
      finish_reason: finish,
      content_filter_results: { hate: { filtered: false, severity: "safe" } },
    }],
  });
  await withUpstream(
    () =>
      sse([
        {
          choices: [],
          created: 0,
          id: "",
          model: "",
          object: "",
          prompt_filter_results: [{ prompt_index: 0, content_filter_results: {} }],
        },
        azureChunk({ role: "assistant", content: "" }),
        azureChunk({ content: "Bon" }),
        azureChunk({ content: "jour" }),
        azureChunk({}, "stop"),
        { ...usageChunk(9, 2), model: "gpt-4o-2024-08-06" },
      ]),
    async (up) => {
      const adapter = createOpenAIAdapter(azureOpenAIEndpoint(up.origin, "2024-10-21"));
      const request: ChatRequest = {
        model: "gpt4o-eu",
        messages: [{ role: "user", content: "Say hello in French" }],
      };
      const { events, error } = await drain(adapter.stream(makeCall(request)));
      assert.equal(error, undefined);

      const sent = up.received[0];
      assert.equal(sent.path, "/openai/deployments/gpt4o-eu/chat/completions");
      assert.deepEqual(sent.query, { "api-version": "2024-10-21" });
      assert.equal(sent.headers["api-key"], "k");
      assert.equal(sent.body.stream, true);
      assert.deepEqual(sent.body.stream_options, { include_usage: true });

      assert.deepEqual(events, [
        { type: "text", text: "Bon" },
        { type: "text", text: "jour" },
        {
          type: "done",
          finish_reason: "stop",
          usage: { input_tokens: 9, output_tokens: 2 },
          model: "gpt-4o-2024-08-06",
        },
      ]);
    },
  );
});

Deno.test("azure errors: 429 with Azure's error body is rate_limited", async () => {
  await withUpstream(
    () =>
      json(429, {
        error: {
          code: "429",
          message: "Requests to the ChatCompletions_Create Operation under Azure OpenAI API " +
            "version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 " +
            "pricing tier. Please retry after 6 seconds.",
        },
      }),
    async (up) => {
      const adapter = createOpenAIAdapter(azureOpenAIEndpoint(up.origin, "2024-10-21"));
      const request: ChatRequest = {
        model: "gpt4o-eu",
        messages: [{ role: "user", content: "x" }],
      };
      await assert.rejects(adapter.complete(makeCall(request)), (err) => {
        assertProviderError(err, "rate_limited", /exceeded token rate limit/, 429);
        return true;
      });
    },
  );
});

Deno.test("openai stream: a stream cut after finish_reason but before usage and [DONE] throws", async () => {
  // OpenAI documents that an interrupted stream may lose the final usage chunk.
  // Reporting such a stream as done would claim zero tokens used; it must fail
  // so the gateway falls back to estimating usage for a stream cut short.
  await withUpstream(
    () =>
      sse(
        [
          chunk({ role: "assistant", content: "" }),
          chunk({ content: "All of it." }),
          chunk({}, "stop"),
        ],
        false,
      ),
    async (up) => {
      const request: ChatRequest = {
        model: "gpt-4o-mini",
        messages: [{ role: "user", content: "x" }],
      };
      const { events, error } = await drain(openai(up.origin).stream(makeCall(request)));
      assert.deepEqual(events, [{ type: "text", text: "All of it." }]);
      assertProviderError(error, "server", "upstream stream ended before finishing");
    },
  );
});

Deno.test("openai stream: stopping iteration early releases the upstream response", async () => {
  let upstreamCancelled!: () => void;
  const cancelled = new Promise<void>((resolve) => upstreamCancelled = resolve);
  await withUpstream(
    () =>
      new Response(
        new ReadableStream<Uint8Array>({
          start(controller) {
            controller.enqueue(
              encoder.encode(
                `data: ${JSON.stringify(chunk({ role: "assistant", content: "" }))}\n\n` +
                  `data: ${JSON.stringify(chunk({ content: "enough" }))}\n\n`,
              ),
            );
          },
          cancel() {
            upstreamCancelled();
          },
        }),
        { headers: { "content-type": "text/event-stream" } },
      ),
    async (up) => {
      const request: ChatRequest = {
        model: "gpt-4o-mini",
        messages: [{ role: "user", content: "x" }],
      };
      const seen: ProviderEvent[] = [];
      for await (const ev of openai(up.origin).stream(makeCall(request))) {
        seen.push(ev);
        break;
      }
      assert.deepEqual(seen, [{ type: "text", text: "enough" }]);
      // Leaving the loop cancels the upstream body instead of leaking it.
      await cancelled;
    },
  );
});
