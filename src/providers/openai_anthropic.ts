import { type ChatRequest, contentText, type Message, type ToolCall } from "./chat_schema.ts";
import { parseJsonData, postJson, readJson, sseMessages } from "./http.ts";
import {
  type ChatResult,
  type FinishReason,
  type ProviderAdapter,
  ProviderError,
  type ProviderEvent,
  type TokenUsage,
  type UpstreamCall,
} from "./types.ts";

/** Translates OpenAI Chat Completions to the Anthropic Messages wire and back. */

type AnthropicBlock = Record<string, unknown>;
interface AnthropicMessage {
  role: "user" | "assistant";
  content: AnthropicBlock[];
}

function partsToBlocks(content: Message["content"]): AnthropicBlock[] {
  if (content == null) return [];
  if (typeof content === "string") return content ? [{ type: "text", text: content }] : [];
  return content.flatMap((part): AnthropicBlock[] => {
    if (part.type === "text") return [{ type: "text", text: String(part.text ?? "") }];
    if (part.type === "image_url") {
      const url = String((part.image_url as { url?: string } | undefined)?.url ?? "");
      const data = /^data:([^;]+);base64,(.*)$/.exec(url);
      return [{
        type: "image",
        source: data
          ? { type: "base64", media_type: data[1], data: data[2] }
          : { type: "url", url },
      }];
    }
    return [];
  });
}

function parseArguments(args: string): unknown {
  try {
    return args ? JSON.parse(args) : {};
  } catch {
    return {};
  }
}

/** Anthropic requires alternating roles, so consecutive same-role turns are merged. */
function translateMessages(messages: Message[]) {
  const system: string[] = [];
  const out: AnthropicMessage[] = [];
  const push = (role: AnthropicMessage["role"], blocks: AnthropicBlock[]) => {
    const prev = out[out.length - 1];
    if (prev?.role === role) prev.content.push(...blocks);
    else out.push({ role, content: blocks });
  };
  for (const m of messages) {
    if (m.role === "system" || m.role === "developer") {
      system.push(contentText(m.content));
    } else if (m.role === "user") {
      push("user", partsToBlocks(m.content));
    } else if (m.role === "assistant") {
      const calls = (m.tool_calls ?? []).map((c) => ({
        type: "tool_use",
        id: c.id,
        name: c.function.name,
        input: parseArguments(c.function.arguments),
      }));
      push("assistant", [...partsToBlocks(m.content), ...calls]);
    } else {
      push("user", [{
        type: "tool_result",
        tool_use_id: m.tool_call_id,
        content: contentText(m.content),
      }]);
    }
  }
  return { system: system.join("\n\n") || undefined, messages: out };
}

function translateToolChoice(choice: ChatRequest["tool_choice"]) {
  if (choice === undefined) return undefined;
  if (choice === "auto") return { type: "auto" };
  if (choice === "required") return { type: "any" };
  if (choice === "none") return { type: "none" };
  return { type: "tool", name: choice.function.name };
}

export function toAnthropicRequest(call: UpstreamCall, stream: boolean) {
  const r = call.request;
  const { system, messages } = translateMessages(r.messages);
  const stop = typeof r.stop === "string" ? [r.stop] : r.stop ?? undefined;
  return {
    model: r.model,
    max_tokens: r.max_completion_tokens ?? r.max_tokens ?? call.maxOutputTokens,
    messages,
    ...(system ? { system } : {}),
    ...(r.temperature != null ? { temperature: Math.min(r.temperature, 1) } : {}),
    ...(r.top_p != null ? { top_p: r.top_p } : {}),
    ...(stop ? { stop_sequences: stop } : {}),
    ...(r.tools?.length
      ? {
        tools: r.tools.map((t) => ({
          name: t.function.name,
          description: t.function.description,
          input_schema: t.function.parameters ?? { type: "object", properties: {} },
        })),
      }
      : {}),
    ...(r.tools?.length && r.tool_choice
      ? { tool_choice: translateToolChoice(r.tool_choice) }
      : {}),
    ...(stream ? { stream: true } : {}),
  };
}

function toFinish(stopReason: unknown): FinishReason {
  if (stopReason === "max_tokens") return "length";
  if (stopReason === "tool_use") return "tool_calls";
  if (stopReason === "refusal") return "content_filter";
  return "stop";
}

function toUsage(u: { input_tokens?: number; output_tokens?: number } | undefined): TokenUsage {
  return { input_tokens: u?.input_tokens ?? 0, output_tokens: u?.output_tokens ?? 0 };
}

export interface AnthropicEndpoint {
  baseUrl: string;
  version: string;
}

export function createAnthropicAdapter(endpoint: AnthropicEndpoint): ProviderAdapter {
  const url = `${endpoint.baseUrl.replace(/\/+$/, "")}/v1/messages`;
  const headers = (call: UpstreamCall): Record<string, string> => ({
    "anthropic-version": endpoint.version,
    ...(call.apiKey ? { "x-api-key": call.apiKey.reveal() } : {}),
  });

  async function complete(call: UpstreamCall): Promise<ChatResult> {
    const res = await postJson(url, headers(call), toAnthropicRequest(call, false), call.signal);
    const json = await readJson(res, call.signal) as {
      model?: string;
      content?: Array<{ type: string; text?: string; id?: string; name?: string; input?: unknown }>;
      stop_reason?: string;
      usage?: { input_tokens?: number; output_tokens?: number };
    };
    if (!Array.isArray(json.content)) {
      throw new ProviderError("server", "upstream response has no content");
    }
    const texts = json.content.filter((b) => b.type === "text").map((b) => b.text ?? "");
    const toolCalls: ToolCall[] = json.content.filter((b) => b.type === "tool_use").map((b) => ({
      id: b.id ?? "",
      type: "function",
      function: { name: b.name ?? "", arguments: JSON.stringify(b.input ?? {}) },
    }));
    return {
      text: texts.length ? texts.join("") : null,
      tool_calls: toolCalls,
      finish_reason: toFinish(json.stop_reason),
      usage: toUsage(json.usage),
      model: json.model ?? call.request.model,
    };
  }

  async function* stream(call: UpstreamCall): AsyncGenerator<ProviderEvent> {
    const res = await postJson(url, headers(call), toAnthropicRequest(call, true), call.signal);
    const usage: TokenUsage = { input_tokens: 0, output_tokens: 0 };
    let model = call.request.model;
    let finish: FinishReason = "stop";
    // Anthropic numbers all content blocks; OpenAI numbers tool calls only.
    const toolIndex = new Map<number, number>();
    // A tool called with no input streams no JSON at all; OpenAI clients expect "{}".
    const toolsWithoutArgs = new Set<number>();
    for await (const msg of sseMessages(res, call.signal)) {
      const ev = parseJsonData(msg.data) as {
        type?: string;
        index?: number;
        message?: { model?: string; usage?: { input_tokens?: number; output_tokens?: number } };
        content_block?: { type?: string; id?: string; name?: string };
        delta?: { type?: string; text?: string; partial_json?: string; stop_reason?: string };
        usage?: { input_tokens?: number; output_tokens?: number };
        error?: { type?: string; message?: string };
      };
      switch (ev.type) {
        case "message_start":
          model = ev.message?.model ?? model;
          Object.assign(usage, toUsage(ev.message?.usage));
          break;
        case "content_block_start":
          if (ev.content_block?.type === "tool_use") {
            const index = toolIndex.size;
            toolIndex.set(ev.index ?? 0, index);
            toolsWithoutArgs.add(index);
            yield {
              type: "tool_call",
              index,
              id: ev.content_block.id,
              name: ev.content_block.name,
              arguments: "",
            };
          }
          break;
        case "content_block_delta":
          if (ev.delta?.type === "text_delta" && ev.delta.text) {
            yield { type: "text", text: ev.delta.text };
          } else if (ev.delta?.type === "input_json_delta") {
            const index = toolIndex.get(ev.index ?? 0);
            if (index !== undefined && ev.delta.partial_json) {
              toolsWithoutArgs.delete(index);
              yield { type: "tool_call", index, arguments: ev.delta.partial_json };
            }
          }
          break;
        case "content_block_stop": {
          const index = toolIndex.get(ev.index ?? 0);
          if (index !== undefined && toolsWithoutArgs.delete(index)) {
            yield { type: "tool_call", index, arguments: "{}" };
          }
          break;
        }
        case "message_delta":
          if (ev.delta?.stop_reason) finish = toFinish(ev.delta.stop_reason);
          if (ev.usage?.output_tokens !== undefined) usage.output_tokens = ev.usage.output_tokens;
          if (ev.usage?.input_tokens) usage.input_tokens = ev.usage.input_tokens;
          break;
        case "message_stop":
          yield { type: "done", finish_reason: finish, usage, model };
          return;
        case "error": {
          const kind = ev.error?.type === "rate_limit_error" ? "rate_limited" : "server";
          throw new ProviderError(kind, ev.error?.message ?? "upstream stream error");
        }
      }
    }
    throw new ProviderError("server", "upstream stream ended before message_stop");
  }

  return { needsKey: true, complete, stream };
}
