import type { MockProviderConfig } from "../config.ts";
import { type ChatRequest, contentText, type Tool } from "./chat_schema.ts";
import { sleep } from "./sleep.ts";
import { estimatePromptTokens } from "./token_estimate.ts";
import {
  collectStream,
  type ProviderAdapter,
  ProviderError,
  type ProviderEvent,
  type UpstreamCall,
} from "./types.ts";

/** Example arguments for a tool, derived from its JSON schema so any tool can be demoed. */
function exampleArguments(tool: Tool, userText: string): string {
  const props = (tool.function.parameters?.properties ?? {}) as Record<string, { type?: string }>;
  const args: Record<string, unknown> = {};
  for (const [name, schema] of Object.entries(props)) {
    switch (schema.type) {
      case "number":
      case "integer":
        args[name] = 1;
        break;
      case "boolean":
        args[name] = true;
        break;
      case "array":
        args[name] = [];
        break;
      case "object":
        args[name] = {};
        break;
      default:
        args[name] = userText;
    }
  }
  return JSON.stringify(args);
}

function chooseTool(request: ChatRequest): Tool | undefined {
  const tools = request.tools ?? [];
  const choice = request.tool_choice ?? "auto";
  const last = request.messages[request.messages.length - 1];
  if (tools.length === 0 || choice === "none" || last.role === "tool") return undefined;
  if (typeof choice === "object") {
    return tools.find((t) => t.function.name === choice.function.name);
  }
  return tools[0];
}

function replyText(request: ChatRequest): string {
  const last = request.messages[request.messages.length - 1];
  if (last.role === "tool") {
    return `The tool returned: ${contentText(last.content).slice(0, 200)}`;
  }
  const lastUser = request.messages.findLast((m) => m.role === "user");
  const said = lastUser ? contentText(lastUser.content).slice(0, 200) : "";
  return `Hello from the Convergio demo provider. You said: ${said}`;
}

/**
 * The demo provider: deterministic output, token-by-token streaming with
 * configurable delays, and failure injection on every Nth call.
 */
export function createMockAdapter(cfg: MockProviderConfig): ProviderAdapter {
  let calls = 0;

  async function* stream(call: UpstreamCall): AsyncGenerator<ProviderEvent> {
    const { request, signal } = call;
    calls++;
    const failing = cfg.fail !== "none" && calls % cfg.fail_every === 0;
    if (failing && cfg.fail === "unavailable") {
      throw new ProviderError("server", "demo provider injected failure", 503);
    }
    if (failing && cfg.fail === "rate_limited") {
      throw new ProviderError("rate_limited", "demo provider injected rate limit", 429);
    }
    if (failing && cfg.fail === "timeout") {
      await new Promise((_, reject) =>
        signal.addEventListener("abort", () => reject(signal.reason))
      );
    }
    await sleep(cfg.first_token_ms, signal);
    const input_tokens = estimatePromptTokens(request);
    const tool = chooseTool(request);
    if (tool) {
      const args = exampleArguments(tool, replyText(request));
      yield {
        type: "tool_call",
        index: 0,
        id: `call_demo_${calls}`,
        name: tool.function.name,
        arguments: "",
      };
      yield { type: "tool_call", index: 0, arguments: args };
      const usage = { input_tokens, output_tokens: Math.ceil(args.length / 4) + 1 };
      yield { type: "done", finish_reason: "tool_calls", usage, model: request.model };
      return;
    }
    const cap = request.max_completion_tokens ?? request.max_tokens ?? call.maxOutputTokens;
    const words = replyText(request).match(/\S+\s*/g) ?? [];
    const emitted = words.slice(0, cap);
    for (const [i, word] of emitted.entries()) {
      if (i > 0) await sleep(cfg.inter_token_ms, signal);
      if (failing && cfg.fail === "mid_stream" && i === 2) {
        throw new ProviderError("server", "demo provider injected mid-stream failure", 500);
      }
      yield { type: "text", text: word };
    }
    yield {
      type: "done",
      finish_reason: emitted.length < words.length ? "length" : "stop",
      usage: { input_tokens, output_tokens: emitted.length },
      model: request.model,
    };
  }

  return {
    needsKey: false,
    stream,
    complete: (call) => collectStream(stream(call)),
  };
}
