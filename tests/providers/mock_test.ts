import assert from "node:assert/strict";
import type { MockProviderConfig } from "../../src/config.ts";
import type { ChatRequest } from "../../src/providers/chat_schema.ts";
import { createMockAdapter } from "../../src/providers/mock.ts";
import { ProviderError, type ProviderEvent, type UpstreamCall } from "../../src/providers/types.ts";

const cfg = (over: Partial<MockProviderConfig> = {}): MockProviderConfig => ({
  protocol: "mock",
  first_token_ms: 0,
  inter_token_ms: 0,
  fail: "none",
  fail_every: 1,
  ...over,
});

const call = (
  request: Partial<ChatRequest> = {},
  signal = new AbortController().signal,
): UpstreamCall => ({
  request: { model: "demo-large", messages: [{ role: "user", content: "ping" }], ...request },
  maxOutputTokens: 4096,
  signal,
});

async function collect(events: AsyncIterable<ProviderEvent>) {
  const out: ProviderEvent[] = [];
  for await (const ev of events) out.push(ev);
  return out;
}

Deno.test("mock streams the same deterministic answer token by token", async () => {
  const adapter = createMockAdapter(cfg());
  const a = await collect(adapter.stream(call()));
  const b = await collect(adapter.stream(call()));
  assert.deepEqual(a, b);
  const texts = a.filter((e) => e.type === "text").map((e) => e.type === "text" && e.text);
  assert.deepEqual(texts, [
    "Hello ",
    "from ",
    "the ",
    "Convergio ",
    "demo ",
    "provider. ",
    "You ",
    "said: ",
    "ping",
  ]);
  const done = a[a.length - 1];
  assert.ok(done.type === "done");
  assert.equal(done.finish_reason, "stop");
  assert.equal(done.usage.output_tokens, 9);
  assert.equal(done.model, "demo-large");
});

Deno.test("mock honours max_tokens with finish_reason length", async () => {
  const result = await createMockAdapter(cfg()).complete(call({ max_tokens: 3 }));
  assert.equal(result.text, "Hello from the ");
  assert.equal(result.finish_reason, "length");
  assert.equal(result.usage.output_tokens, 3);
});

Deno.test("mock calls the chosen tool with schema-shaped arguments, then reads its result", async () => {
  const tools = [
    { type: "function" as const, function: { name: "a", parameters: {} } },
    {
      type: "function" as const,
      function: {
        name: "b",
        parameters: {
          type: "object",
          properties: {
            s: { type: "string" },
            n: { type: "number" },
            f: { type: "boolean" },
            l: { type: "array" },
            o: { type: "object" },
          },
        },
      },
    },
  ];
  const adapter = createMockAdapter(cfg());
  const named = await adapter.complete(
    call({ tools, tool_choice: { type: "function", function: { name: "b" } } }),
  );
  assert.equal(named.finish_reason, "tool_calls");
  assert.equal(named.text, null);
  assert.equal(named.tool_calls[0].function.name, "b");
  const args = JSON.parse(named.tool_calls[0].function.arguments);
  assert.deepEqual(args, {
    s: "Hello from the Convergio demo provider. You said: ping",
    n: 1,
    f: true,
    l: [],
    o: {},
  });
  const auto = await adapter.complete(call({ tools }));
  assert.equal(auto.tool_calls[0].function.name, "a");
  const none = await adapter.complete(call({ tools, tool_choice: "none" }));
  assert.equal(none.tool_calls.length, 0);
  const after = await adapter.complete(call({
    tools,
    messages: [
      { role: "user", content: "ping" },
      { role: "assistant", content: null, tool_calls: named.tool_calls },
      { role: "tool", tool_call_id: named.tool_calls[0].id, content: "42" },
    ],
  }));
  assert.equal(after.text, "The tool returned: 42");
});

Deno.test("mock injects failures on every Nth call", async () => {
  const unavailable = createMockAdapter(cfg({ fail: "unavailable", fail_every: 2 }));
  await unavailable.complete(call());
  await assert.rejects(
    unavailable.complete(call()),
    (e) => e instanceof ProviderError && e.status === 503,
  );
  await unavailable.complete(call());

  const limited = createMockAdapter(cfg({ fail: "rate_limited" }));
  await assert.rejects(
    limited.complete(call()),
    (e) => e instanceof ProviderError && e.kind === "rate_limited",
  );

  const mid = createMockAdapter(cfg({ fail: "mid_stream" }));
  const seen: string[] = [];
  await assert.rejects(async () => {
    for await (const ev of mid.stream(call())) if (ev.type === "text") seen.push(ev.text);
  }, (e) => e instanceof ProviderError && e.kind === "server");
  assert.deepEqual(seen, ["Hello ", "from "]);

  const hang = createMockAdapter(cfg({ fail: "timeout" }));
  const ac = new AbortController();
  const pending = hang.complete(call({}, ac.signal));
  ac.abort(new Error("gave up"));
  await assert.rejects(pending, /gave up/);
});

Deno.test("mock delays are interrupted by an abort", async () => {
  const slow = createMockAdapter(cfg({ first_token_ms: 60_000 }));
  const ac = new AbortController();
  const pending = slow.complete(call({}, ac.signal));
  ac.abort(new Error("stop"));
  await assert.rejects(pending, /stop/);
});
