import type { ToolCall } from "../providers/chat_schema.ts";
import type { StreamingChat } from "./chat_service.ts";
import type { StreamSink } from "./stream_driver.ts";

/** Writes one V7 frame (`chat.token`, `tool.call`, …); the transport adds ids and time. */
export type FrameSender = (type: string, data: Record<string, unknown>) => Promise<unknown>;

/**
 * The V7 framing of a chat stream, shared by SSE and WebSocket: tokens as
 * they come, each tool call whole once its arguments are complete, then
 * `chat.complete` with usage, or `error`.
 */
export function v7Sink(stream: StreamingChat, send: FrameSender): StreamSink {
  const calls: ToolCall[] = [];
  return {
    text: async (text) => void await send("chat.token", { text }),
    toolCall: (d) => {
      const call = calls[d.index] ??= {
        id: "",
        type: "function",
        function: { name: "", arguments: "" },
      };
      if (d.id) call.id = d.id;
      if (d.name) call.function.name = d.name;
      call.function.arguments += d.arguments;
      return Promise.resolve();
    },
    done: async (finish, usage) => {
      for (const call of calls) {
        await send("tool.call", {
          tool_call_id: call.id,
          tool_name: call.function.name,
          arguments: call.function.arguments,
        });
      }
      await send("chat.complete", {
        model: stream.alias,
        provider: stream.provider,
        finish_reason: finish,
        usage,
      });
    },
    error: async (err, usage) =>
      void await send("error", {
        code: err.code,
        message: err.message,
        retryable: err.retryable,
        usage,
      }),
    cancelled: async (usage) =>
      void await send("chat.complete", {
        model: stream.alias,
        provider: stream.provider,
        finish_reason: "cancelled",
        usage,
      }),
  };
}
