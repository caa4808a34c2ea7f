import { CANCELLED_CODE, CLIENT_CLOSED, GatewayError, toGatewayError } from "../errors.ts";
import type { RequestRecord } from "../obs/request_record.ts";
import type { FinishReason, ProviderEvent } from "../providers/types.ts";
import type { StreamingChat, UsageSummary } from "./chat_service.ts";

/** How one transport frames a chat stream (OpenAI SSE, V7 SSE, WebSocket). */
export interface StreamSink {
  text(text: string): Promise<void>;
  toolCall(delta: Extract<ProviderEvent, { type: "tool_call" }>): Promise<void>;
  done(finish: FinishReason, usage: UsageSummary): Promise<void>;
  error(err: GatewayError, usage: UsageSummary): Promise<void>;
  /** The client cancelled but is still listening (WebSocket `chat.cancel`). */
  cancelled?(usage: UsageSummary): Promise<void>;
}

/**
 * Pumps a routed stream into a sink and settles usage exactly once, whether
 * the stream finishes, fails after the first byte, or the client goes away.
 * A stream cut short is charged for what was produced, estimated from text.
 */
export async function driveStream(
  chat: StreamingChat,
  sink: StreamSink,
  record: RequestRecord,
  signal: AbortSignal,
): Promise<void> {
  let produced = "";
  const toolIndexes = new Set<number>();
  try {
    for await (const ev of chat.events) {
      if (ev.type === "text") {
        produced += ev.text;
        await sink.text(ev.text);
      } else if (ev.type === "tool_call") {
        toolIndexes.add(ev.index);
        produced += ev.arguments;
        await sink.toolCall(ev);
      } else {
        await sink.done(ev.finish_reason, chat.settle(ev.usage, produced, toolIndexes.size));
        record.end(200);
        return;
      }
    }
    throw new GatewayError("provider.unavailable", "upstream stream ended without completion");
  } catch (err) {
    const cancelled = signal.aborted;
    const error = cancelled
      ? new GatewayError("request.invalid", "client cancelled the request", {
        status: CLIENT_CLOSED,
      })
      : toGatewayError(err);
    const usage = chat.settle(null, produced, toolIndexes.size);
    record.fields.error_code = cancelled ? CANCELLED_CODE : error.code;
    await (cancelled ? sink.cancelled?.(usage) : sink.error(error, usage))?.catch(() => {});
    record.end(error.status);
  }
}
