import type { ChatRequest, ToolCall } from "./chat_schema.ts";
import type { Secret } from "../secret.ts";

export type FinishReason = "stop" | "length" | "tool_calls" | "content_filter";

export interface TokenUsage {
  input_tokens: number;
  output_tokens: number;
}

/** What every adapter yields while streaming, whatever its wire protocol. */
export type ProviderEvent =
  | { type: "text"; text: string }
  | { type: "tool_call"; index: number; id?: string; name?: string; arguments: string }
  | { type: "done"; finish_reason: FinishReason; usage: TokenUsage; model: string };

export interface ChatResult {
  text: string | null;
  tool_calls: ToolCall[];
  finish_reason: FinishReason;
  usage: TokenUsage;
  model: string;
}

/** One call to one deployment: the canonical request with the upstream model id. */
export interface UpstreamCall {
  request: ChatRequest;
  /** Output cap to send when the request has none (Anthropic requires one). */
  maxOutputTokens: number;
  apiKey?: Secret;
  signal: AbortSignal;
}

export interface ProviderAdapter {
  /** Whether calls need a key: BYOK tenants without one are refused before any call. */
  readonly needsKey: boolean;
  complete(call: UpstreamCall): Promise<ChatResult>;
  stream(call: UpstreamCall): AsyncIterable<ProviderEvent>;
}

export type ProviderErrorKind =
  | "connect"
  | "timeout"
  | "rate_limited"
  | "server"
  | "auth"
  | "client";

/** An upstream failure, classified so the router can decide whether to fail over. */
export class ProviderError extends Error {
  constructor(
    readonly kind: ProviderErrorKind,
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = "ProviderError";
  }
}

export function classifyStatus(status: number): ProviderErrorKind {
  if (status === 429) return "rate_limited";
  if (status === 401 || status === 403) return "auth";
  if (status === 408) return "timeout";
  // Only a malformed request is the caller's fault; anything else (404 for a
  // missing deployment, say) is the deployment's, so it fails over.
  if (status === 400 || status === 413 || status === 422) return "client";
  return "server";
}

/** Folds a stream into one result; used where an upstream has no non-streaming mode. */
export async function collectStream(events: AsyncIterable<ProviderEvent>): Promise<ChatResult> {
  let text = "";
  let sawText = false;
  const calls: ToolCall[] = [];
  for await (const ev of events) {
    if (ev.type === "text") {
      text += ev.text;
      sawText = true;
    } else if (ev.type === "tool_call") {
      const call = calls[ev.index] ??= {
        id: "",
        type: "function",
        function: { name: "", arguments: "" },
      };
      if (ev.id) call.id = ev.id;
      if (ev.name) call.function.name = ev.name;
      call.function.arguments += ev.arguments;
    } else {
      return {
        text: sawText ? text : null,
        tool_calls: calls,
        finish_reason: ev.finish_reason,
        usage: ev.usage,
        model: ev.model,
      };
    }
  }
  throw new ProviderError("server", "upstream stream ended without completion");
}
