import { Hono, type MiddlewareHandler } from "hono";
import { streamSSE } from "hono/streaming";
import type { Clock } from "../clock.ts";
import type { Config } from "../config.ts";
import { openaiErrorBody } from "../errors.ts";
import { ChatRequestSchema } from "../providers/chat_schema.ts";
import { parseBody } from "./body.ts";
import type { ChatService, UsageSummary } from "./chat_service.ts";
import type { AppEnv } from "./context.ts";
import { setServedHeaders } from "./served_headers.ts";
import { driveStream } from "./stream_driver.ts";

/** Mounted ahead of auth, so even auth failures reach OpenAI clients in their shape. */
export const openaiErrorShape: MiddlewareHandler<AppEnv> = async (c, next) => {
  c.set("errorShape", "openai");
  await next();
};

function openaiUsage(u: UsageSummary) {
  return {
    prompt_tokens: u.in_tokens,
    completion_tokens: u.out_tokens,
    total_tokens: u.in_tokens + u.out_tokens,
  };
}

/**
 * The OpenAI-compatible API, so unmodified OpenAI SDKs work by changing only
 * their base URL and key. Convergio's extras ride in headers and in a
 * `convergio` field that SDKs ignore.
 */
export function openaiChatRoutes(config: Config, chat: ChatService, clock: Clock) {
  const app = new Hono<AppEnv>();

  app.get("/models", (c) =>
    c.json({
      object: "list",
      data: Object.keys(config.models).map((id) => ({
        id,
        object: "model",
        created: 0,
        owned_by: "convergio",
      })),
    }));

  app.post("/chat/completions", async (c) => {
    const request = await parseBody(c, ChatRequestSchema);
    const requestId = c.get("requestId");
    const call = {
      principal: c.get("principal"),
      request,
      record: c.get("record"),
      signal: c.req.raw.signal,
      trace: c.get("trace"),
      transport: request.stream ? "sse" as const : "http" as const,
    };
    const id = `chatcmpl-${requestId}`;
    const created = Math.floor(clock.now() / 1000);

    if (!request.stream) {
      const out = await chat.complete(call);
      setServedHeaders(c, out);
      return c.json({
        id,
        object: "chat.completion",
        created,
        model: out.alias,
        choices: [{
          index: 0,
          message: {
            role: "assistant",
            content: out.result.text,
            refusal: null,
            ...(out.result.tool_calls.length ? { tool_calls: out.result.tool_calls } : {}),
          },
          logprobs: null,
          finish_reason: out.result.finish_reason,
        }],
        usage: openaiUsage(out.usage),
        request_id: requestId,
        convergio: { provider: out.provider, usage: out.usage },
      });
    }

    const stream = await chat.stream(call);
    setServedHeaders(c, stream);
    c.get("record").defer();
    const includeUsage = request.stream_options?.include_usage === true;
    return streamSSE(c, async (sse) => {
      const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
        sse.writeSSE({
          data: JSON.stringify({
            id,
            object: "chat.completion.chunk",
            created,
            model: stream.alias,
            choices,
            ...extra,
          }),
        });
      await chunk([{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }]);
      await driveStream(
        stream,
        {
          text: (text) => chunk([{ index: 0, delta: { content: text }, finish_reason: null }]),
          toolCall: (d) =>
            chunk([{
              index: 0,
              delta: {
                tool_calls: [{
                  index: d.index,
                  ...(d.id ? { id: d.id, type: "function" } : {}),
                  function: { ...(d.name ? { name: d.name } : {}), arguments: d.arguments },
                }],
              },
              finish_reason: null,
            }]),
          done: async (finish, usage) => {
            // Without include_usage the summary rides on the final chunk, so
            // every response still carries one.
            await chunk(
              [{ index: 0, delta: {}, finish_reason: finish }],
              includeUsage ? {} : { usage: openaiUsage(usage), convergio: { usage } },
            );
            if (includeUsage) {
              await chunk([], { usage: openaiUsage(usage), convergio: { usage } });
            }
            await sse.writeSSE({ data: "[DONE]" });
          },
          error: (err) => sse.writeSSE({ data: JSON.stringify(openaiErrorBody(err, requestId)) }),
        },
        c.get("record"),
        c.req.raw.signal,
      );
    });
  });

  return app;
}
