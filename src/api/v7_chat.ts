import { Hono } from "hono";
import { streamSSE } from "hono/streaming";
import { z } from "zod";
import type { Clock } from "../clock.ts";
import { ModeSchema } from "../config.ts";
import { GatewayError } from "../errors.ts";
import {
  type ChatRequest,
  MessageSchema,
  ToolChoiceSchema,
  ToolSchema,
} from "../providers/chat_schema.ts";
import { parseBody } from "./body.ts";
import type { ChatService } from "./chat_service.ts";
import type { AppEnv } from "./context.ts";
import { setServedHeaders } from "./served_headers.ts";
import { driveStream } from "./stream_driver.ts";
import { v7Sink } from "./v7_sink.ts";

export const V7ChatRequestSchema = z.strictObject({
  prompt: z.string().min(1).optional(),
  messages: z.array(MessageSchema).min(1).optional(),
  model_hint: z.string().min(1).optional(),
  mode: ModeSchema.optional(),
  session_id: z.string().min(1).max(128).optional(),
  max_tokens: z.number().int().positive().optional(),
  temperature: z.number().min(0).max(2).optional(),
  tools: z.array(ToolSchema).optional(),
  tool_choice: ToolChoiceSchema.optional(),
}).refine((r) => (r.prompt === undefined) !== (r.messages === undefined), {
  message: "give exactly one of prompt or messages",
  path: ["prompt"],
});
export type V7ChatRequest = z.infer<typeof V7ChatRequestSchema>;

/**
 * Turns a V7 request into the canonical one. The lane is the token's; a
 * request may restate it but not switch it, since budgets differ per lane.
 */
export function toCanonical(
  body: V7ChatRequest,
  defaultModel: string,
  tokenMode: string,
): ChatRequest {
  if (body.mode && body.mode !== tokenMode) {
    throw new GatewayError(
      "request.invalid",
      `mode: this token is for the ${tokenMode} lane, not ${body.mode}`,
      { param: "mode" },
    );
  }
  return {
    model: body.model_hint ?? defaultModel,
    messages: body.messages ?? [{ role: "user", content: body.prompt! }],
    ...(body.max_tokens ? { max_tokens: body.max_tokens } : {}),
    ...(body.temperature !== undefined ? { temperature: body.temperature } : {}),
    ...(body.tools ? { tools: body.tools } : {}),
    ...(body.tool_choice ? { tool_choice: body.tool_choice } : {}),
  };
}

/** The native V7 chat API: `POST /v1/chat` and `POST /v1/chat/stream` (SSE). */
export function v7ChatRoutes(chat: ChatService, defaultModel: string, clock: Clock) {
  const app = new Hono<AppEnv>();

  app.post("/chat", async (c) => {
    const body = await parseBody(c, V7ChatRequestSchema);
    c.get("record").fields.session_id = body.session_id;
    const principal = c.get("principal");
    const out = await chat.complete({
      principal,
      request: toCanonical(body, defaultModel, principal.mode),
      record: c.get("record"),
      signal: c.req.raw.signal,
      trace: c.get("trace"),
      transport: "http",
    });
    setServedHeaders(c, out);
    return c.json({
      request_id: c.get("requestId"),
      model: out.alias,
      provider: out.provider,
      message: {
        role: "assistant",
        content: out.result.text,
        ...(out.result.tool_calls.length ? { tool_calls: out.result.tool_calls } : {}),
      },
      finish_reason: out.result.finish_reason,
      usage: out.usage,
    });
  });

  app.post("/chat/stream", async (c) => {
    const body = await parseBody(c, V7ChatRequestSchema);
    c.get("record").fields.session_id = body.session_id;
    const principal = c.get("principal");
    const requestId = c.get("requestId");
    const signal = c.req.raw.signal;
    const stream = await chat.stream({
      principal,
      request: toCanonical(body, defaultModel, principal.mode),
      record: c.get("record"),
      signal,
      trace: c.get("trace"),
      transport: "sse",
    });
    setServedHeaders(c, stream);
    c.get("record").defer();
    let eventId = 0;
    return streamSSE(c, async (sse) => {
      const send = (type: string, data: Record<string, unknown>) =>
        sse.writeSSE({
          event: type,
          id: String(++eventId),
          data: JSON.stringify({
            type,
            request_id: requestId,
            event_id: eventId,
            timestamp_ms: clock.now(),
            ...data,
          }),
        });
      await driveStream(stream, v7Sink(stream, send), c.get("record"), signal);
    });
  });

  return app;
}
