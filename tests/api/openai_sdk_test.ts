import assert from "node:assert/strict";
import OpenAI from "openai";
import { startGateway, testConfig, type TestGateway } from "../support/gateway.ts";

/** The unmodified official SDK; only its base URL and key point at the gateway. */
async function sdk(gw: TestGateway, apiKey?: string) {
  return new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: apiKey ?? await gw.token(), maxRetries: 0 });
}

const weatherTool = {
  type: "function" as const,
  function: {
    name: "get_weather",
    description: "Current weather for a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};

Deno.test("OpenAI SDK: non-streaming completion with usage and request id", async () => {
  const gw = await startGateway();
  try {
    const client = await sdk(gw);
    const res = await client.chat.completions.create({
      model: "convergio-demo",
      messages: [{ role: "system", content: "be brief" }, { role: "user", content: "Hello SDK" }],
    });
    assert.equal(res.object, "chat.completion");
    assert.equal(
      res.choices[0].message.content,
      "Hello from the Convergio demo provider. You said: Hello SDK",
    );
    assert.equal(res.choices[0].finish_reason, "stop");
    assert.equal(res.usage?.completion_tokens, 10);
    assert.equal(res.usage?.total_tokens, res.usage!.prompt_tokens + 10);
    assert.match(res._request_id ?? "", /^req_/);
  } finally {
    await gw.close();
  }
});

Deno.test("OpenAI SDK: streaming with include_usage", async () => {
  const gw = await startGateway();
  try {
    const client = await sdk(gw);
    const stream = await client.chat.completions.create({
      model: "convergio-demo",
      messages: [{ role: "user", content: "Stream please" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined | null;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      text += chunk.choices[0]?.delta?.content ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(text, "Hello from the Convergio demo provider. You said: Stream please");
    assert.equal(finish, "stop");
    assert.equal(usage?.completion_tokens, 10);
    assert.ok(chunks >= 12, `expected role + 10 token + finish + usage chunks, got ${chunks}`);
  } finally {
    await gw.close();
  }
});

Deno.test("OpenAI SDK: tool call round trip, streamed and not", async () => {
  const gw = await startGateway();
  try {
    const client = await sdk(gw);
    const messages: OpenAI.ChatCompletionMessageParam[] = [
      { role: "user", content: "Weather in Rome?" },
    ];
    const first = await client.chat.completions.create({
      model: "convergio-demo",
      messages,
      tools: [weatherTool],
      tool_choice: "auto",
    });
    assert.equal(first.choices[0].finish_reason, "tool_calls");
    const call = first.choices[0].message.tool_calls![0];
    assert.equal(call.type, "function");
    assert.equal(call.type === "function" && call.function.name, "get_weather");
    const args = JSON.parse(call.type === "function" ? call.function.arguments : "{}");
    assert.equal(typeof args.city, "string");

    messages.push(first.choices[0].message);
    messages.push({ role: "tool", tool_call_id: call.id, content: '{"temp_c": 21}' });
    const second = await client.chat.completions.create({
      model: "convergio-demo",
      messages,
      tools: [weatherTool],
    });
    assert.equal(second.choices[0].message.content, 'The tool returned: {"temp_c": 21}');

    // The SDK's stream helper assembles tool-call deltas into a final message.
    const runner = client.chat.completions.stream({
      model: "convergio-demo",
      messages: [{ role: "user", content: "Weather in Oslo?" }],
      tools: [weatherTool],
      tool_choice: { type: "function", function: { name: "get_weather" } },
    });
    const final = await runner.finalChatCompletion();
    const streamed = final.choices[0].message.tool_calls![0];
    assert.equal(streamed.type === "function" && streamed.function.name, "get_weather");
    assert.ok(streamed.id.startsWith("call_"));
    assert.equal(final.choices[0].finish_reason, "tool_calls");
  } finally {
    await gw.close();
  }
});

Deno.test("OpenAI SDK: errors map to the SDK's error classes with stable codes", async () => {
  const gw = await startGateway(testConfig({
    providers: {
      demo: { protocol: "mock" },
      down: { protocol: "mock", fail: "unavailable" },
      busy: { protocol: "mock", fail: "rate_limited" },
      flaky: { protocol: "mock", fail: "mid_stream" },
    },
    models: {
      "convergio-demo": {
        deployments: [{ provider: "demo", model: "m" }],
        price: { input_per_1m: 1, output_per_1m: 1 },
      },
      broken: {
        deployments: [{ provider: "down", model: "m" }],
        price: { input_per_1m: 1, output_per_1m: 1 },
      },
      limited: {
        deployments: [{ provider: "busy", model: "m" }],
        price: { input_per_1m: 1, output_per_1m: 1 },
      },
      flaky: {
        deployments: [{ provider: "flaky", model: "m" }],
        price: { input_per_1m: 1, output_per_1m: 1 },
      },
    },
    routing: { max_attempts: 1 },
  }));
  try {
    const messages = [{ role: "user" as const, content: "x" }];
    const bad = await sdk(gw, "not-a-token");
    await assert.rejects(
      bad.chat.completions.create({ model: "convergio-demo", messages }),
      (err) => err instanceof OpenAI.AuthenticationError && err.code === "auth.invalid",
    );
    const client = await sdk(gw);
    await assert.rejects(
      client.chat.completions.create({ model: "gpt-unknown", messages }),
      (err) =>
        err instanceof OpenAI.BadRequestError && err.code === "request.invalid" &&
        err.param === "model" && err.type === "invalid_request_error",
    );
    await assert.rejects(
      client.chat.completions.create({ model: "broken", messages }),
      (err) =>
        err instanceof OpenAI.InternalServerError && err.status === 503 &&
        err.code === "provider.unavailable",
    );
    await assert.rejects(
      client.chat.completions.create({ model: "limited", messages }),
      (err) => err instanceof OpenAI.RateLimitError && err.code === "provider.rate_limited",
    );
    const stream = await client.chat.completions.create({ model: "flaky", messages, stream: true });
    let text = "";
    await assert.rejects(
      (async () => {
        for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
      })(),
      (err) => err instanceof OpenAI.APIError && err.code === "provider.unavailable",
    );
    assert.equal(text, "Hello from ", "the tokens before the failure arrive first");
    const models = await client.models.list();
    assert.deepEqual(models.data.map((m) => m.id).sort(), [
      "broken",
      "convergio-demo",
      "flaky",
      "limited",
    ]);
  } finally {
    await gw.close();
  }
});
