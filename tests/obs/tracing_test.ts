import assert from "node:assert/strict";
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import { ROOT_CONTEXT, trace } from "@opentelemetry/api";
import { startRequestSpan } from "../../src/obs/tracing.ts";
import { readSse, startGateway, testConfig } from "../support/gateway.ts";

function tracing() {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  return { exporter, tracer: provider.getTracer("test") };
}

const parentOf = (s: ReadableSpan) => s.parentSpanContext?.spanId;

const tool = {
  type: "function",
  function: {
    name: "lookup",
    parameters: { type: "object", properties: { q: { type: "string" } } },
  },
};

Deno.test("one trace per request: auth → metering → provider call → tool calls → stream", async () => {
  const { exporter, tracer } = tracing();
  const gw = await startGateway(testConfig(), { tracer });
  try {
    const token = await gw.token({ tenant: "acme", mode: "managed" });
    const res = await fetch(`${gw.url}/v1/chat/stream`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "x-request-id": "trace-me-1" },
      body: JSON.stringify({ prompt: "find", tools: [tool] }),
    });
    await readSse(res);
    const spans = exporter.getFinishedSpans();
    const root = spans.find((s) => s.name === "POST /v1/chat/stream");
    assert.ok(root, spans.map((s) => s.name).join(", "));
    assert.equal(new Set(spans.map((s) => s.spanContext().traceId)).size, 1, "one trace");
    const byName = (name: string) => {
      const s = spans.find((x) => x.name === name);
      assert.ok(s, `span ${name} missing: ${spans.map((x) => x.name)}`);
      return s;
    };
    for (const name of ["auth", "metering", "chat convergio-demo", "tool calls", "stream"]) {
      assert.equal(
        parentOf(byName(name)),
        root.spanContext().spanId,
        `${name} is a child of the request`,
      );
    }
    const order = ["auth", "metering", "chat convergio-demo", "stream"].map((n) =>
      byName(n).startTime
    );
    for (let i = 1; i < order.length; i++) {
      const [s0, ns0] = order[i - 1];
      const [s1, ns1] = order[i];
      assert.ok(s1 > s0 || (s1 === s0 && ns1 >= ns0), "spans start in request-path order");
    }
    const call = byName("chat convergio-demo").attributes;
    assert.equal(call["gen_ai.operation.name"], "chat");
    assert.equal(call["gen_ai.provider.name"], "convergio.mock");
    assert.equal(call["gen_ai.request.model"], "convergio-demo");
    const stream = byName("stream").attributes;
    assert.equal(stream["gen_ai.response.model"], "demo-large");
    assert.equal(typeof stream["gen_ai.usage.input_tokens"], "number");
    assert.ok((stream["gen_ai.usage.output_tokens"] as number) > 0);
    assert.equal(root.attributes.tenant_id, "acme");
    assert.equal(root.attributes.request_id, "trace-me-1");
    assert.equal(root.attributes["http.route"], "/v1/chat/stream");
    assert.equal(byName("tool calls").attributes["convergio.tool_calls"], 1);
    const line = gw.logs.find((l) => l.request_id === "trace-me-1");
    assert.equal(line?.trace_id, root.spanContext().traceId, "the log line carries the trace id");
  } finally {
    await gw.close();
  }
});

Deno.test("an inbound traceparent is continued, and failures carry error.type", async () => {
  const { exporter, tracer } = tracing();
  const gw = await startGateway(testConfig(), { tracer });
  try {
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const parentId = "00f067aa0ba902b7";
    const res = await fetch(`${gw.url}/v1/chat`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${await gw.token()}`,
        traceparent: `00-${traceId}-${parentId}-01`,
      },
      body: JSON.stringify({ prompt: "x", model_hint: "nope" }),
    });
    assert.equal(res.status, 400);
    await res.body?.cancel();
    const root = exporter.getFinishedSpans().find((s) => s.name === "POST /v1/chat")!;
    assert.equal(root.spanContext().traceId, traceId);
    assert.equal(root.parentSpanContext?.spanId, parentId);
    assert.equal(root.attributes["error.type"], "request.invalid");

    const bad = await fetch(`${gw.url}/v1/chat`, {
      method: "POST",
      headers: { authorization: "Bearer nope" },
      body: "{}",
    });
    await bad.body?.cancel();
    const auth = exporter.getFinishedSpans().filter((s) => s.name === "auth").at(-1)!;
    assert.equal(auth.attributes["error.type"], "auth.invalid");
  } finally {
    await gw.close();
  }
});

Deno.test("with tracing off the log line has no trace id unless a traceparent came in", async () => {
  const gw = await startGateway();
  try {
    const headers = { authorization: `Bearer ${await gw.token()}` };
    await (await fetch(`${gw.url}/v1/models`, { headers })).body?.cancel();
    const traceId = "0af7651916cd43dd8448eb211c80319c";
    await (await fetch(`${gw.url}/v1/models`, {
      headers: { ...headers, traceparent: `00-${traceId}-b7ad6b7169203331-01` },
    })).body?.cancel();
    const lines = gw.logs.filter((l) => l.route === "/v1/models");
    assert.equal(lines[0].trace_id, undefined);
    assert.equal(lines[1].trace_id, traceId);
  } finally {
    await gw.close();
  }
});

Deno.test("the request span is a child of an active server span, else continues a traceparent", () => {
  const { exporter, tracer } = tracing();
  const inbound = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  const headers = new Headers({ traceparent: inbound });
  const server = tracer.startSpan("POST (Deno's server span)");
  const active = trace.setSpan(ROOT_CONTEXT, server);

  startRequestSpan(tracer, headers, "under server", {}, active).span.end();
  startRequestSpan(tracer, headers, "from traceparent", {}, ROOT_CONTEXT).span.end();
  startRequestSpan(tracer, new Headers(), "new root", {}).span.end();
  server.end();

  const byName = (name: string) => exporter.getFinishedSpans().find((s) => s.name === name)!;
  assert.equal(parentOf(byName("under server")), server.spanContext().spanId);
  assert.equal(byName("under server").spanContext().traceId, server.spanContext().traceId);
  assert.equal(parentOf(byName("from traceparent")), "b7ad6b7169203331");
  assert.equal(
    byName("from traceparent").spanContext().traceId,
    "0af7651916cd43dd8448eb211c80319c",
  );
  assert.equal(parentOf(byName("new root")), undefined);
});
