import type { ToolCall } from "./chat_schema.ts";
import { parseJsonData, postJson, readJson, sseMessages } from "./http.ts";
import type {
  ChatResult,
  FinishReason,
  ProviderAdapter,
  ProviderEvent,
  TokenUsage,
  UpstreamCall,
} from "./types.ts";
import { ProviderError } from "./types.ts";
import type { Secret } from "../secret.ts";

/** Where and how to reach an OpenAI-wire upstream; Azure differs only here. */
export interface OpenAIEndpoint {
  url(model: string): string;
  headers(apiKey?: Secret): Record<string, string>;
}

export function openaiEndpoint(baseUrl: string): OpenAIEndpoint {
  const base = baseUrl.replace(/\/+$/, "");
  return {
    url: () => `${base}/chat/completions`,
    headers: (apiKey): Record<string, string> =>
      apiKey ? { authorization: `Bearer ${apiKey.reveal()}` } : {},
  };
}

interface WireUsage {
  prompt_tokens?: number;
  completion_tokens?: number;
}

function toUsage(u: WireUsage | undefined | null): TokenUsage {
  return { input_tokens: u?.prompt_tokens ?? 0, output_tokens: u?.completion_tokens ?? 0 };
}

function toFinish(reason: unknown): FinishReason {
  return reason === "length" || reason === "tool_calls" || reason === "content_filter"
    ? reason
    : "stop";
}

function body(call: UpstreamCall, stream: boolean) {
  const { stream: _s, stream_options: _o, ...rest } = call.request;
  return stream ? { ...rest, stream: true, stream_options: { include_usage: true } } : rest;
}

/** Adapter for the OpenAI Chat Completions wire: OpenAI, Azure OpenAI, Ollama, vLLM. */
export function createOpenAIAdapter(endpoint: OpenAIEndpoint): ProviderAdapter {
  async function complete(call: UpstreamCall): Promise<ChatResult> {
    const res = await postJson(
      endpoint.url(call.request.model),
      endpoint.headers(call.apiKey),
      body(call, false),
      call.signal,
    );
    const json = await readJson(res, call.signal) as {
      model?: string;
      choices?: Array<
        { message?: { content?: string | null; tool_calls?: ToolCall[] }; finish_reason?: string }
      >;
      usage?: WireUsage;
    };
    const choice = json.choices?.[0];
    if (!choice?.message) throw new ProviderError("server", "upstream response has no choices");
    return {
      text: choice.message.content ?? null,
      tool_calls: choice.message.tool_calls ?? [],
      finish_reason: toFinish(choice.finish_reason),
      usage: toUsage(json.usage),
      model: json.model ?? call.request.model,
    };
  }

  async function* stream(call: UpstreamCall): AsyncGenerator<ProviderEvent> {
    const res = await postJson(
      endpoint.url(call.request.model),
      endpoint.headers(call.apiKey),
      body(call, true),
      call.signal,
    );
    let finish: FinishReason | undefined;
    let usage: TokenUsage | undefined;
    let model = call.request.model;
    let complete = false;
    for await (const msg of sseMessages(res, call.signal)) {
      if (msg.data === "[DONE]") {
        complete = true;
        break;
      }
      const chunk = parseJsonData(msg.data) as {
        model?: string;
        error?: { message?: string };
        choices?: Array<{
          delta?: {
            content?: string | null;
            tool_calls?: Array<
              { index: number; id?: string; function?: { name?: string; arguments?: string } }
            >;
          };
          finish_reason?: string | null;
        }>;
        usage?: WireUsage | null;
      };
      if (chunk.error) {
        throw new ProviderError("server", chunk.error.message ?? "upstream stream error");
      }
      if (chunk.model) model = chunk.model;
      if (chunk.usage) usage = toUsage(chunk.usage);
      const choice = chunk.choices?.[0];
      if (!choice) continue;
      if (choice.delta?.content) yield { type: "text", text: choice.delta.content };
      for (const tc of choice.delta?.tool_calls ?? []) {
        yield {
          type: "tool_call",
          index: tc.index,
          id: tc.id,
          name: tc.function?.name,
          arguments: tc.function?.arguments ?? "",
        };
      }
      if (choice.finish_reason) finish = toFinish(choice.finish_reason);
    }
    // Without [DONE] the usage chunk may be missing, and with it the bill.
    if (!finish || !complete) {
      throw new ProviderError("server", "upstream stream ended before finishing");
    }
    yield { type: "done", finish_reason: finish, usage: usage ?? toUsage(null), model };
  }

  return { needsKey: true, complete, stream };
}
