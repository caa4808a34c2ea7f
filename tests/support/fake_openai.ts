/**
 * A local upstream that speaks the OpenAI Chat Completions wire, with a
 * behaviour per deployment (model id): answer, fail with a status, or hang.
 */
export type Behaviour = "ok" | "hang" | number;

export interface FakeOpenAI {
  url: string;
  hits: Record<string, number>;
  authHeaders: string[];
  close(): Promise<void>;
}

export function startFakeOpenAI(behaviours: Record<string, Behaviour>): FakeOpenAI {
  const hits: Record<string, number> = {};
  const authHeaders: string[] = [];
  const hanging = new Set<(v: Response) => void>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const body = await req.json();
    const model = body.model as string;
    hits[model] = (hits[model] ?? 0) + 1;
    authHeaders.push(req.headers.get("authorization") ?? "");
    const behaviour = behaviours[model] ?? "ok";
    if (behaviour === "hang") {
      return await new Promise<Response>((resolve) => {
        hanging.add(resolve);
        req.signal.addEventListener("abort", () => resolve(new Response(null, { status: 499 })));
      });
    }
    if (typeof behaviour === "number") {
      return Response.json({
        error: { message: `fake ${behaviour}`, type: "server_error", param: null, code: null },
      }, { status: behaviour });
    }
    const text = `answer from ${model}`;
    const usage = { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 };
    if (!body.stream) {
      return Response.json({
        id: "chatcmpl-1",
        object: "chat.completion",
        created: 1,
        model,
        choices: [{
          index: 0,
          message: { role: "assistant", content: text },
          finish_reason: "stop",
        }],
        usage,
      });
    }
    const chunk = (choices: unknown[], extra = {}) =>
      `data: ${
        JSON.stringify({
          id: "c",
          object: "chat.completion.chunk",
          created: 1,
          model,
          choices,
          ...extra,
        })
      }\n\n`;
    return new Response(
      chunk([{ index: 0, delta: { role: "assistant", content: text }, finish_reason: null }]) +
        chunk([{ index: 0, delta: {}, finish_reason: "stop" }]) +
        chunk([], { usage }) + "data: [DONE]\n\n",
      { headers: { "content-type": "text/event-stream" } },
    );
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    hits,
    authHeaders,
    close: async () => {
      for (const resolve of hanging) resolve(new Response(null, { status: 499 }));
      await server.shutdown();
    },
  };
}

/** A loopback port with nothing listening on it. */
export function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}
