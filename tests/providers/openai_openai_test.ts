import assert from "node:assert/strict";
import type { ChatRequest } from "../../src/providers/chat_schema.ts";
import { createOpenAIAdapter, openaiEndpoint } from "../../src/providers/openai_openai.ts";
import { azureOpenAIEndpoint } from "../../src/providers/openai_azureopenai.ts";
import {
  collectStream,
  type ProviderAdapter,
  type ProviderEvent,
} from "../../src/providers/types.ts";
import {
  assertAbortsMidStream,
  assertFailsBothWays,
  assertRejectsProviderError,
  assertRejectsWith,
  closedPort,
  json,
  makeCall,
  splitBytes,
  sseRaw,
  stalledSse,
  streamEvents,
  testCompleteFailures,
  testStreamFailures,
  WEATHER_TOOL,
  withUpstream,
} from "../support/recording_upstream.ts";

// ---------------------------------------------------------------------------
// The OpenAI Chat Completions wire, served by a local recording upstream.
// ---------------------------------------------------------------------------

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

/** The one-line request most tests send; only the model differs between them. */
function ask(model = "gpt-4o-mini"): ChatRequest {
  return { model, messages: [{ role: "user", content: "x" }] };
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
      const messages: ChatRequest["messages"] = [
        { role: "system", content: "Be brief." },
        { role: "user", content: "Hi" },
      ];
      const request: ChatRequest = {
        model: "gpt-4o-mini",
        messages,
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
        messages,
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
      const got = [];
      for (const _ of reasons) got.push((await adapter.complete(makeCall(ask()))).finish_reason);
      assert.deepEqual(got, ["length", "content_filter", "stop"]);
      assert.equal(up.received.length, 3);
    },
  );
});

Deno.test("openai: no api key means no authorization header", async () => {
  await withUpstream(
    () => json(200, completion({ role: "assistant", content: "local" }, "stop")),
    async (up) => {
      const call = makeCall(ask("llama3"));
      delete call.apiKey;
      const result = await openai(up.origin).complete(call);
      assert.equal(result.text, "local");
      assert.equal(up.received[0].headers["authorization"], undefined);
    },
  );
});

// ---------------------------------------------------------------------------
// Replies complete() must refuse, and HTTP and transport errors
// ---------------------------------------------------------------------------

// Upstream answers that complete() must turn into a ProviderError.
testCompleteFailures(openai, ask("gpt-4o"), [
  {
    name: "openai complete: a body without choices is a server ProviderError",
    respond: () =>
      json(200, { id: "chatcmpl-x", object: "chat.completion", model: "gpt-4o", choices: [] }),
    kind: "server",
    message: "upstream response has no choices",
  },
  {
    name: "openai complete: an unreadable 200 body is a server ProviderError",
    respond: () => new Response("<html>gateway hiccup</html>", { status: 200 }),
    kind: "server",
    message: /^upstream sent an unreadable body: /,
  },
  {
    name: "openai errors: a non-JSON error body falls back to the HTTP status",
    respond: () => new Response("<html><body>502 Bad Gateway</body></html>", { status: 502 }),
    kind: "server",
    message: "upstream returned HTTP 502",
    status: 502,
  },
]);

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
      for (const e of HTTP_ERRORS) {
        current = e;
        await assertFailsBothWays(adapter, ask(), e.kind, e.message, e.status);
      }
      assert.equal(up.received.length, HTTP_ERRORS.length * 2);
    },
  );
});

Deno.test("openai errors: an unreachable upstream is a connect ProviderError", async () => {
  const adapter = createOpenAIAdapter(openaiEndpoint(`http://127.0.0.1:${closedPort()}/v1`));
  await assertFailsBothWays(adapter, ask("gpt-4o"), "connect", /^cannot reach upstream: /);
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
    const events = await streamEvents(openai(up.origin).stream(makeCall(request)));

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
  // Seven-byte slices cut through field names, JSON and multi-byte characters.
  const pieces = splitBytes(text, 7);

  await withUpstream(() => sseRaw(pieces), async (up) => {
    const request: ChatRequest = {
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "go" }],
    };
    const events = await streamEvents(openai(up.origin).stream(makeCall(request)));
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

// Streams the adapter must end with a server ProviderError, after the text they did get.
testStreamFailures(openai, ask(), [
  {
    name: "openai stream: a stream cut off before finish_reason and [DONE] throws",
    respond: () =>
      sse([chunk({ role: "assistant", content: "" }), chunk({ content: "Half a sent" })], false),
    events: [{ type: "text", text: "Half a sent" }],
    kind: "server",
    message: "upstream stream ended before finishing",
  },
  {
    // OpenAI documents that an interrupted stream may lose the final usage chunk.
    // Reporting such a stream as done would claim zero tokens used; it must fail
    // so the gateway falls back to estimating usage for a stream cut short.
    name: "openai stream: a stream cut after finish_reason but before usage and [DONE] throws",
    respond: () =>
      sse(
        [
          chunk({ role: "assistant", content: "" }),
          chunk({ content: "All of it." }),
          chunk({}, "stop"),
        ],
        false,
      ),
    events: [{ type: "text", text: "All of it." }],
    kind: "server",
    message: "upstream stream ended before finishing",
  },
  {
    name: "openai stream: a malformed JSON data line throws ProviderError",
    respond: () =>
      sseRaw([
        `data: ${JSON.stringify(chunk({ role: "assistant", content: "" }))}\n\n`,
        `data: ${JSON.stringify(chunk({ content: "ok" }))}\n\n`,
        'data: {"id":"chatcmpl-9zQ3pQ8uXx1","object":"chat.completion.chunk","choices":[{\n\n',
        `data: ${JSON.stringify(chunk({}, "stop"))}\n\n`,
        "data: [DONE]\n\n",
      ]),
    events: [{ type: "text", text: "ok" }],
    kind: "server",
    message: "upstream sent a malformed stream event",
  },
  {
    name: "openai stream: an in-stream error object throws ProviderError with its message",
    respond: () =>
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
    events: [{ type: "text", text: "Once upon" }],
    kind: "server",
    message: "The server had an error while processing your request.",
  },
]);

/** A first text chunk, then silence: the upstream is still "thinking". */
function stalledAfter(text: string) {
  return stalledSse(
    `data: ${JSON.stringify(chunk({ role: "assistant", content: "" }))}\n\n` +
      `data: ${JSON.stringify(chunk({ content: text }))}\n\n`,
  );
}

Deno.test("openai stream: aborting mid-stream rejects iteration with the abort reason", async () => {
  const upstream = stalledAfter("first");
  await withUpstream(upstream.respond, async (up) => {
    await assertAbortsMidStream(
      (signal) => openai(up.origin).stream(makeCall(ask(), signal)),
      { type: "text", text: "first" },
      new DOMException("client went away", "AbortError"),
      upstream.cancelled,
    );
  });
});

Deno.test("openai stream: stopping iteration early releases the upstream response", async () => {
  const upstream = stalledAfter("enough");
  await withUpstream(upstream.respond, async (up) => {
    const seen: ProviderEvent[] = [];
    for await (const ev of openai(up.origin).stream(makeCall(ask()))) {
      seen.push(ev);
      break;
    }
    assert.deepEqual(seen, [{ type: "text", text: "enough" }]);
    // Leaving the loop cancels the upstream body instead of leaking it.
    await upstream.cancelled;
  });
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
      const pending = openai(up.origin).complete(makeCall(ask(), controller.signal));
      await requestArrived;
      const reason = new Error("deadline exceeded");
      controller.abort(reason);
      await assertRejectsWith(pending, reason);
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
      const events = await streamEvents(adapter.stream(makeCall(request)));

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
      await assertRejectsProviderError(
        adapter.complete(makeCall(ask("gpt4o-eu"))),
        "rate_limited",
        /exceeded token rate limit/,
        429,
      );
    },
  );
});
