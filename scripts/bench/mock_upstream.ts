/**
 * An OpenAI-wire upstream for benchmarks: a fixed completion with usage, or
 * SSE chunks, a usage chunk and [DONE] when `stream` is set.
 *   MOCK_PORT (9100), MOCK_CHUNKS (20), MOCK_CHUNK_MS (0), MOCK_LATENCY_MS (0)
 */
export interface MockUpstreamOptions {
  hostname?: string;
  port: number;
  chunks: number;
  chunkMs: number;
  latencyMs: number;
}

const sleep = (ms: number) => ms > 0 ? new Promise((r) => setTimeout(r, ms)) : Promise.resolve();

export function startMockUpstream(opts: MockUpstreamOptions): Deno.HttpServer<Deno.NetAddr> {
  const encoder = new TextEncoder();
  const usage = {
    prompt_tokens: 12,
    completion_tokens: opts.chunks,
    total_tokens: 12 + opts.chunks,
  };
  return Deno.serve(
    { hostname: opts.hostname ?? "127.0.0.1", port: opts.port, onListen() {} },
    async (req) => {
      const body = await req.json().catch(() => ({}));
      await sleep(opts.latencyMs);
      const model = body.model ?? "mock";
      if (!body.stream) {
        return Response.json({
          id: "chatcmpl-mock",
          object: "chat.completion",
          created: 0,
          model,
          choices: [{
            index: 0,
            message: { role: "assistant", content: "tok ".repeat(opts.chunks).trim() },
            finish_reason: "stop",
          }],
          usage,
        });
      }
      const frame = (choices: unknown[], extra = {}) =>
        encoder.encode(
          `data: ${
            JSON.stringify({
              id: "c",
              object: "chat.completion.chunk",
              created: 0,
              model,
              choices,
              ...extra,
            })
          }\n\n`,
        );
      const stream = new ReadableStream<Uint8Array>({
        async start(ctrl) {
          for (let i = 0; i < opts.chunks; i++) {
            if (i > 0) await sleep(opts.chunkMs);
            ctrl.enqueue(frame([{ index: 0, delta: { content: "tok " }, finish_reason: null }]));
          }
          ctrl.enqueue(frame([{ index: 0, delta: {}, finish_reason: "stop" }]));
          ctrl.enqueue(frame([], { usage }));
          ctrl.enqueue(encoder.encode("data: [DONE]\n\n"));
          ctrl.close();
        },
      });
      return new Response(stream, { headers: { "content-type": "text/event-stream" } });
    },
  );
}

if (import.meta.main) {
  const env = (name: string, fallback: number) => Number(Deno.env.get(name) ?? fallback);
  const server = startMockUpstream({
    port: env("MOCK_PORT", 9100),
    chunks: env("MOCK_CHUNKS", 20),
    chunkMs: env("MOCK_CHUNK_MS", 0),
    latencyMs: env("MOCK_LATENCY_MS", 0),
  });
  console.log(`mock upstream on http://127.0.0.1:${server.addr.port}`);
}
