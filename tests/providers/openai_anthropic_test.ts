import assert from "node:assert/strict";
import type { ChatRequest } from "../../src/providers/chat_schema.ts";
import { createAnthropicAdapter } from "../../src/providers/openai_anthropic.ts";
import { collectStream, type ProviderAdapter } from "../../src/providers/types.ts";
import {
  assertAbortsMidStream,
  assertFailsBothWays,
  assertRejectsProviderError,
  closedPort,
  json as jsonResponse,
  makeCall,
  splitBytes,
  sseRaw,
  stalledSse,
  streamEvents,
  testStreamFailures,
  WEATHER_TOOL,
  withUpstream,
} from "../support/recording_upstream.ts";

// ---------------------------------------------------------------------------
// The Anthropic Messages wire, served by a local recording upstream.
// ---------------------------------------------------------------------------

/** A JSON response carrying a `request-id` header, as Anthropic's do. */
function json(status: number, body: unknown): Response {
  return jsonResponse(status, body, { "request-id": "req_011CTest" });
}

/** One `event: <name>\ndata: <json>\n\n` frame, as Anthropic sends them. */
function frame(ev: { type: string } & Record<string, unknown>): string {
  return `event: ${ev.type}\ndata: ${JSON.stringify(ev)}\n\n`;
}

/** One frame per network write. */
function sse(events: Array<{ type: string } & Record<string, unknown>>): Response {
  return sseRaw(events.map(frame));
}

const MODEL_SNAPSHOT = "claude-sonnet-4-5-20250929";

function messageStart(inputTokens: number) {
  return {
    type: "message_start",
    message: {
      id: "msg_01XFDUDYJgAACzvnptvVoYEL",
      type: "message",
      role: "assistant",
      content: [],
      model: MODEL_SNAPSHOT,
      stop_reason: null,
      stop_sequence: null,
      usage: {
        input_tokens: inputTokens,
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: 0,
        output_tokens: 1,
      },
    },
  };
}

const textStart = (index: number) => ({
  type: "content_block_start",
  index,
  content_block: { type: "text", text: "" },
});
const textDelta = (index: number, text: string) => ({
  type: "content_block_delta",
  index,
  delta: { type: "text_delta", text },
});
const toolStart = (index: number, id: string, name: string) => ({
  type: "content_block_start",
  index,
  content_block: { type: "tool_use", id, name, input: {} },
});
const jsonDelta = (index: number, partial_json: string) => ({
  type: "content_block_delta",
  index,
  delta: { type: "input_json_delta", partial_json },
});
const blockStop = (index: number) => ({ type: "content_block_stop", index });
const messageDelta = (stop_reason: string, outputTokens: number) => ({
  type: "message_delta",
  delta: { stop_reason, stop_sequence: null },
  usage: { output_tokens: outputTokens },
});
const PING = { type: "ping" };
const MESSAGE_STOP = { type: "message_stop" };

function message(
  content: Array<Record<string, unknown>>,
  stop_reason: string,
  usage = { input_tokens: 21, output_tokens: 9 },
) {
  return {
    id: "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    type: "message",
    role: "assistant",
    model: MODEL_SNAPSHOT,
    content,
    stop_reason,
    stop_sequence: null,
    usage: { cache_creation_input_tokens: 0, cache_read_input_tokens: 0, ...usage },
  };
}

function anthropicError(status: number, type: string, msg: string): Response {
  return json(status, {
    type: "error",
    error: { type, message: msg },
    request_id: "req_011CTest",
  });
}

// ---------------------------------------------------------------------------
// Call helpers.
// ---------------------------------------------------------------------------

function anthropic(origin: string): ProviderAdapter {
  // A trailing slash in the configured base URL must not double up.
  return createAnthropicAdapter({ baseUrl: `${origin}/`, version: "2023-06-01" });
}

/** The one-line request most tests send. */
function ask(): ChatRequest {
  return { model: "claude-haiku-4-5", messages: [{ role: "user", content: "x" }] };
}

const TIME_TOOL = { type: "function" as const, function: { name: "get_time" } };

// ---------------------------------------------------------------------------
// Request translation
// ---------------------------------------------------------------------------

const CONVERSATION: ChatRequest = {
  model: "claude-sonnet-4-5",
  messages: [
    { role: "system", content: "You are a weather bot." },
    { role: "developer", content: [{ type: "text", text: "Answer in English." }] },
    { role: "user", content: "Weather in Paris and Rome?" },
    {
      role: "assistant",
      content: "Checking both.",
      tool_calls: [
        {
          id: "toolu_01A",
          type: "function",
          function: { name: "get_weather", arguments: '{"city":"Paris"}' },
        },
        {
          id: "toolu_01B",
          type: "function",
          function: { name: "get_weather", arguments: '{"city":"Rome","units":["c"]}' },
        },
      ],
    },
    { role: "tool", tool_call_id: "toolu_01A", content: "18°C, sunny" },
    {
      role: "tool",
      tool_call_id: "toolu_01B",
      content: [{ type: "text", text: "21°C" }, { type: "text", text: ", cloudy" }],
    },
  ],
  tools: [WEATHER_TOOL, TIME_TOOL],
  tool_choice: "auto",
};

const TRANSLATED = {
  model: "claude-sonnet-4-5",
  max_tokens: 1024,
  system: "You are a weather bot.\n\nAnswer in English.",
  messages: [
    { role: "user", content: [{ type: "text", text: "Weather in Paris and Rome?" }] },
    {
      role: "assistant",
      content: [
        { type: "text", text: "Checking both." },
        { type: "tool_use", id: "toolu_01A", name: "get_weather", input: { city: "Paris" } },
        {
          type: "tool_use",
          id: "toolu_01B",
          name: "get_weather",
          input: { city: "Rome", units: ["c"] },
        },
      ],
    },
    {
      role: "user",
      content: [
        { type: "tool_result", tool_use_id: "toolu_01A", content: "18°C, sunny" },
        { type: "tool_result", tool_use_id: "toolu_01B", content: "21°C, cloudy" },
      ],
    },
  ],
  tools: [
    {
      name: "get_weather",
      description: "Current weather for a city",
      input_schema: {
        type: "object",
        properties: { city: { type: "string" } },
        required: ["city"],
      },
    },
    { name: "get_time", input_schema: { type: "object", properties: {} } },
  ],
  tool_choice: { type: "auto" },
};

Deno.test("anthropic complete: translates the conversation and sends x-api-key + anthropic-version", async () => {
  await withUpstream(
    () => json(200, message([{ type: "text", text: "Paris 18°C, Rome 21°C." }], "end_turn")),
    async (up) => {
      await anthropic(up.origin).complete(makeCall(CONVERSATION));

      assert.equal(up.received.length, 1);
      const sent = up.received[0];
      assert.equal(sent.method, "POST");
      assert.equal(sent.path, "/v1/messages");
      assert.equal(sent.headers["x-api-key"], "k");
      assert.equal(sent.headers["anthropic-version"], "2023-06-01");
      assert.equal(sent.headers["content-type"], "application/json");
      assert.equal(sent.headers["authorization"], undefined);
      // The whole body, so nothing untranslated (role "tool", "stream") leaks through.
      assert.deepEqual(sent.body, TRANSLATED);
      assert.equal("stream" in sent.body, false);
    },
  );
});

Deno.test("anthropic request: tool_choice required→any, named→tool, none→none; dropped without tools", async () => {
  await withUpstream(
    () => json(200, message([{ type: "text", text: "ok" }], "end_turn")),
    async (up) => {
      const adapter = anthropic(up.origin);
      const base: ChatRequest = {
        model: "claude-haiku-4-5",
        messages: [{ role: "user", content: "hi" }],
        tools: [WEATHER_TOOL],
      };
      await adapter.complete(makeCall({ ...base, tool_choice: "required" }));
      await adapter.complete(
        makeCall({ ...base, tool_choice: { type: "function", function: { name: "get_weather" } } }),
      );
      await adapter.complete(makeCall({ ...base, tool_choice: "none" }));
      await adapter.complete(makeCall({ ...base, tool_choice: "auto" }));
      await adapter.complete(makeCall({ ...base }));
      // The deployment's output cap fills in for a request without one.
      await adapter.complete({
        ...makeCall({ ...base, tools: [], tool_choice: "required" }),
        maxOutputTokens: 777,
      });

      assert.deepEqual(up.received.map((r) => r.body.tool_choice), [
        { type: "any" },
        { type: "tool", name: "get_weather" },
        { type: "none" },
        { type: "auto" },
        undefined,
        undefined,
      ]);
      assert.equal("tools" in up.received[5].body, false);
      assert.equal("tool_choice" in up.received[5].body, false);
      assert.deepEqual(up.received.map((r) => r.body.max_tokens), [
        1024,
        1024,
        1024,
        1024,
        1024,
        777,
      ]);
    },
  );
});

Deno.test("anthropic request: caps, sampling, stop sequences, images and merged same-role turns", async () => {
  await withUpstream(
    () => json(200, message([{ type: "text", text: "ok" }], "end_turn")),
    async (up) => {
      const adapter = anthropic(up.origin);
      await adapter.complete(makeCall({
        model: "claude-haiku-4-5",
        messages: [
          { role: "user", content: "First." },
          {
            role: "user",
            content: [
              { type: "text", text: "What is in these?" },
              { type: "image_url", image_url: { url: "data:image/png;base64,iVBORw0KGgo=" } },
              { type: "image_url", image_url: { url: "https://example.com/cat.jpg" } },
            ],
          },
          {
            role: "assistant",
            content: "",
            tool_calls: [{
              id: "toolu_01C",
              type: "function",
              function: { name: "get_time", arguments: "" },
            }],
          },
          { role: "tool", tool_call_id: "toolu_01C", content: "12:00" },
          { role: "user", content: "Thanks" },
        ],
        max_tokens: 200,
        max_completion_tokens: 300,
        temperature: 1.7,
        top_p: 0.9,
        stop: "END",
      }));
      await adapter.complete(makeCall({
        model: "claude-haiku-4-5",
        messages: [{ role: "user", content: "hi" }],
        max_tokens: 64,
        temperature: 0,
        stop: ["A", "B"],
      }));

      assert.deepEqual(up.received[0].body, {
        model: "claude-haiku-4-5",
        max_tokens: 300,
        messages: [
          {
            role: "user",
            content: [
              { type: "text", text: "First." },
              { type: "text", text: "What is in these?" },
              {
                type: "image",
                source: { type: "base64", media_type: "image/png", data: "iVBORw0KGgo=" },
              },
              { type: "image", source: { type: "url", url: "https://example.com/cat.jpg" } },
            ],
          },
          {
            role: "assistant",
            content: [{ type: "tool_use", id: "toolu_01C", name: "get_time", input: {} }],
          },
          {
            role: "user",
            content: [
              { type: "tool_result", tool_use_id: "toolu_01C", content: "12:00" },
              { type: "text", text: "Thanks" },
            ],
          },
        ],
        temperature: 1,
        top_p: 0.9,
        stop_sequences: ["END"],
      });
      assert.deepEqual(up.received[1].body, {
        model: "claude-haiku-4-5",
        max_tokens: 64,
        messages: [{ role: "user", content: [{ type: "text", text: "hi" }] }],
        temperature: 0,
        stop_sequences: ["A", "B"],
      });
    },
  );
});

// ---------------------------------------------------------------------------
// complete()
// ---------------------------------------------------------------------------

Deno.test("anthropic complete: text and tool_use blocks map to text, tool_calls, finish and usage", async () => {
  await withUpstream(
    () =>
      json(
        200,
        message(
          [
            { type: "text", text: "I'll check " },
            { type: "text", text: "both cities." },
            {
              type: "tool_use",
              id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
              name: "get_weather",
              input: { city: "Paris", days: 2, flags: { metric: true } },
            },
            { type: "tool_use", id: "toolu_01Vz", name: "get_time", input: {} },
          ],
          "tool_use",
          { input_tokens: 384, output_tokens: 96 },
        ),
      ),
    async (up) => {
      const result = await anthropic(up.origin).complete(makeCall(CONVERSATION));
      assert.deepEqual(result, {
        text: "I'll check both cities.",
        tool_calls: [
          {
            id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            type: "function",
            function: {
              name: "get_weather",
              arguments: '{"city":"Paris","days":2,"flags":{"metric":true}}',
            },
          },
          {
            id: "toolu_01Vz",
            type: "function",
            function: { name: "get_time", arguments: "{}" },
          },
        ],
        finish_reason: "tool_calls",
        usage: { input_tokens: 384, output_tokens: 96 },
        model: MODEL_SNAPSHOT,
      });
    },
  );
});

Deno.test("anthropic complete: stop reasons end_turn→stop, max_tokens→length, stop_sequence→stop, refusal→content_filter", async () => {
  const reasons = ["end_turn", "max_tokens", "stop_sequence", "refusal", "tool_use"];
  let next = 0;
  await withUpstream(
    () => {
      const reason = reasons[next++];
      return json(
        200,
        message(
          reason === "tool_use"
            ? [{ type: "tool_use", id: "toolu_1", name: "get_time", input: {} }]
            : [{ type: "text", text: `because ${reason}` }],
          reason,
        ),
      );
    },
    async (up) => {
      const adapter = anthropic(up.origin);
      const results = [];
      for (const _ of reasons) results.push(await adapter.complete(makeCall(ask())));
      assert.deepEqual(
        results.map((r) => [r.finish_reason, r.text]),
        [
          ["stop", "because end_turn"],
          ["length", "because max_tokens"],
          ["stop", "because stop_sequence"],
          ["content_filter", "because refusal"],
          ["tool_calls", null],
        ],
      );
      assert.deepEqual(results[4].tool_calls.map((c) => c.function.name), ["get_time"]);
    },
  );
});

Deno.test("anthropic complete: a body without content is a server ProviderError", async () => {
  await withUpstream(
    () => json(200, { id: "msg_x", type: "message", role: "assistant", model: MODEL_SNAPSHOT }),
    async (up) => {
      await assertRejectsProviderError(
        anthropic(up.origin).complete(makeCall(ask())),
        "server",
        "upstream response has no content",
      );
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
    type: "invalid_request_error",
    message: "messages.1.content.0.tool_use.input: Input should be a valid dictionary",
  },
  { status: 401, kind: "auth", type: "authentication_error", message: "invalid x-api-key" },
  {
    status: 429,
    kind: "rate_limited",
    type: "rate_limit_error",
    message: "This request would exceed the rate limit for your organization of 50,000 " +
      "input tokens per minute.",
  },
  { status: 500, kind: "server", type: "api_error", message: "Internal server error" },
  { status: 529, kind: "server", type: "overloaded_error", message: "Overloaded" },
] as const;

Deno.test("anthropic errors: HTTP error statuses become classified ProviderErrors (complete and stream)", async () => {
  let current: (typeof HTTP_ERRORS)[number] = HTTP_ERRORS[0];
  await withUpstream(
    () => anthropicError(current.status, current.type, current.message),
    async (up) => {
      const adapter = anthropic(up.origin);
      for (const e of HTTP_ERRORS) {
        current = e;
        await assertFailsBothWays(adapter, ask(), e.kind, e.message, e.status);
      }
      assert.equal(up.received.length, HTTP_ERRORS.length * 2);
    },
  );
});

Deno.test("anthropic errors: an unreachable upstream is a connect ProviderError", async () => {
  const adapter = createAnthropicAdapter({
    baseUrl: `http://127.0.0.1:${closedPort()}`,
    version: "2023-06-01",
  });
  await assertFailsBothWays(adapter, ask(), "connect", /^cannot reach upstream: /);
});

// ---------------------------------------------------------------------------
// stream()
// ---------------------------------------------------------------------------

Deno.test("anthropic stream: text block 0 then tool_use block 1 gives tool_call index 0 and one done", async () => {
  await withUpstream(
    () =>
      sse([
        messageStart(472),
        textStart(0),
        PING,
        textDelta(0, "Okay, let me check "),
        textDelta(0, "the weather."),
        blockStop(0),
        toolStart(1, "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather"),
        jsonDelta(1, ""),
        jsonDelta(1, '{"city": "Par'),
        jsonDelta(1, 'is"}'),
        blockStop(1),
        messageDelta("tool_use", 89),
        MESSAGE_STOP,
      ]),
    async (up) => {
      const events = await streamEvents(anthropic(up.origin).stream(makeCall(CONVERSATION)));

      const sent = up.received[0];
      assert.equal(sent.path, "/v1/messages");
      assert.equal(sent.headers["x-api-key"], "k");
      assert.equal(sent.headers["anthropic-version"], "2023-06-01");
      assert.deepEqual(sent.body, { ...TRANSLATED, stream: true });

      assert.deepEqual(events, [
        { type: "text", text: "Okay, let me check " },
        { type: "text", text: "the weather." },
        {
          type: "tool_call",
          index: 0,
          id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
          name: "get_weather",
          arguments: "",
        },
        { type: "tool_call", index: 0, arguments: '{"city": "Par' },
        { type: "tool_call", index: 0, arguments: 'is"}' },
        {
          type: "done",
          finish_reason: "tool_calls",
          usage: { input_tokens: 472, output_tokens: 89 },
          model: MODEL_SNAPSHOT,
        },
      ]);

      const folded = await collectStream((async function* () {
        yield* events;
      })());
      assert.deepEqual(folded, {
        text: "Okay, let me check the weather.",
        tool_calls: [{
          id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
          type: "function",
          function: { name: "get_weather", arguments: '{"city": "Paris"}' },
        }],
        finish_reason: "tool_calls",
        usage: { input_tokens: 472, output_tokens: 89 },
        model: MODEL_SNAPSHOT,
      });
    },
  );
});

Deno.test("anthropic stream: thinking and text blocks are skipped when numbering two tool calls", async () => {
  await withUpstream(
    () =>
      sse([
        messageStart(120),
        {
          type: "content_block_start",
          index: 0,
          content_block: { type: "thinking", thinking: "", signature: "" },
        },
        {
          type: "content_block_delta",
          index: 0,
          delta: { type: "thinking_delta", thinking: "Two cities, two calls." },
        },
        {
          type: "content_block_delta",
          index: 0,
          delta: { type: "signature_delta", signature: "EqQBCgIYAhIM1gbcDa9GJwZA2b3h" },
        },
        blockStop(0),
        textStart(1),
        textDelta(1, "Checking."),
        blockStop(1),
        toolStart(2, "toolu_A", "get_weather"),
        jsonDelta(2, '{"city":'),
        jsonDelta(2, '"Paris"}'),
        blockStop(2),
        toolStart(3, "toolu_B", "get_weather"),
        jsonDelta(3, '{"city":"Rome"}'),
        blockStop(3),
        messageDelta("tool_use", 150),
        MESSAGE_STOP,
      ]),
    async (up) => {
      const request: ChatRequest = {
        model: "claude-sonnet-4-5",
        messages: [{ role: "user", content: "Paris and Rome?" }],
        tools: [WEATHER_TOOL],
        max_tokens: 4096,
      };
      const events = await streamEvents(anthropic(up.origin).stream(makeCall(request)));
      assert.equal(up.received[0].body.max_tokens, 4096);
      assert.equal(up.received[0].body.stream, true);
      assert.deepEqual(events, [
        { type: "text", text: "Checking." },
        { type: "tool_call", index: 0, id: "toolu_A", name: "get_weather", arguments: "" },
        { type: "tool_call", index: 0, arguments: '{"city":' },
        { type: "tool_call", index: 0, arguments: '"Paris"}' },
        { type: "tool_call", index: 1, id: "toolu_B", name: "get_weather", arguments: "" },
        { type: "tool_call", index: 1, arguments: '{"city":"Rome"}' },
        {
          type: "done",
          finish_reason: "tool_calls",
          usage: { input_tokens: 120, output_tokens: 150 },
          model: MODEL_SNAPSHOT,
        },
      ]);
    },
  );
});

Deno.test("anthropic stream: max_tokens stop maps to length; frames split mid-line still parse", async () => {
  const text = [
    messageStart(12),
    textStart(0),
    textDelta(0, "Ünïcödé "),
    textDelta(0, "🚀 and more"),
    blockStop(0),
    messageDelta("max_tokens", 5),
    MESSAGE_STOP,
  ].map(frame).join("");
  // Cut into 5-byte pieces: through field names, JSON and multi-byte characters.
  const pieces = splitBytes(text, 5);
  await withUpstream(() => sseRaw(pieces), async (up) => {
    const events = await streamEvents(anthropic(up.origin).stream(makeCall(ask())));
    assert.deepEqual(events, [
      { type: "text", text: "Ünïcödé " },
      { type: "text", text: "🚀 and more" },
      {
        type: "done",
        finish_reason: "length",
        usage: { input_tokens: 12, output_tokens: 5 },
        model: MODEL_SNAPSHOT,
      },
    ]);
  });
});

// Streams the adapter must end with a ProviderError, after the text they did get.
testStreamFailures(anthropic, ask(), [
  {
    name: "anthropic stream: an in-stream overloaded error event throws a server ProviderError",
    respond: () =>
      sse([
        messageStart(30),
        textStart(0),
        textDelta(0, "Hel"),
        { type: "error", error: { type: "overloaded_error", message: "Overloaded" } },
      ]),
    events: [{ type: "text", text: "Hel" }],
    kind: "server",
    message: "Overloaded",
  },
  {
    name: "anthropic stream: an in-stream rate_limit_error event is rate_limited",
    respond: () =>
      sse([
        messageStart(30),
        {
          type: "error",
          error: { type: "rate_limit_error", message: "Number of concurrent connections exceeded" },
        },
      ]),
    events: [],
    kind: "rate_limited",
    message: "Number of concurrent connections exceeded",
  },
  {
    name: "anthropic stream: a malformed JSON data line throws ProviderError",
    respond: () =>
      sseRaw([
        frame(messageStart(30)),
        frame(textStart(0)),
        frame(textDelta(0, "fine")),
        'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"ty\n\n',
        frame(messageDelta("end_turn", 4)),
        frame(MESSAGE_STOP),
      ]),
    events: [{ type: "text", text: "fine" }],
    kind: "server",
    message: "upstream sent a malformed stream event",
  },
  {
    name: "anthropic stream: a stream that ends before message_stop throws",
    respond: () =>
      sse([
        messageStart(30),
        textStart(0),
        textDelta(0, "cut"),
        blockStop(0),
        messageDelta("end_turn", 2),
      ]),
    events: [{ type: "text", text: "cut" }],
    kind: "server",
    message: "upstream stream ended before message_stop",
  },
]);

Deno.test("anthropic stream: aborting mid-stream rejects iteration with the abort reason", async () => {
  // One text delta, then nothing more: the model is still generating.
  const upstream = stalledSse(
    frame(messageStart(30)) + frame(textStart(0)) + frame(textDelta(0, "first")),
  );
  await withUpstream(upstream.respond, async (up) => {
    await assertAbortsMidStream(
      (signal) => anthropic(up.origin).stream(makeCall(ask(), signal)),
      { type: "text", text: "first" },
      new Error("request deadline exceeded"),
      upstream.cancelled,
    );
  });
});

Deno.test("anthropic stream: a tool with no input streams '{}' arguments, as complete() returns", async () => {
  // For a tool without parameters Anthropic streams `input: {}` at block start
  // and then only an empty `partial_json`. complete() reports such a call with
  // arguments "{}"; a streamed call must fold to the same valid JSON, or an
  // OpenAI client's JSON.parse(arguments) fails on "".
  let streamed = false;
  await withUpstream(
    (_req, rec) => {
      streamed = rec.body.stream === true;
      return streamed
        ? sse([
          messageStart(40),
          toolStart(0, "toolu_01Now", "get_time"),
          jsonDelta(0, ""),
          blockStop(0),
          messageDelta("tool_use", 12),
          MESSAGE_STOP,
        ])
        : json(
          200,
          message(
            [{ type: "tool_use", id: "toolu_01Now", name: "get_time", input: {} }],
            "tool_use",
            {
              input_tokens: 40,
              output_tokens: 12,
            },
          ),
        );
    },
    async (up) => {
      const adapter = anthropic(up.origin);
      const request: ChatRequest = {
        model: "claude-haiku-4-5",
        messages: [{ role: "user", content: "What time is it?" }],
        tools: [TIME_TOOL],
      };
      const completed = await adapter.complete(makeCall(request));
      assert.deepEqual(completed.tool_calls, [
        { id: "toolu_01Now", type: "function", function: { name: "get_time", arguments: "{}" } },
      ]);

      const folded = await collectStream(adapter.stream(makeCall(request)));
      assert.equal(streamed, true);
      assert.deepEqual(folded, completed);
      assert.deepEqual(JSON.parse(folded.tool_calls[0].function.arguments), {});
    },
  );
});
