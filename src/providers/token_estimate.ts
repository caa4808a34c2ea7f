import { type ChatRequest, contentText } from "./chat_schema.ts";

/**
 * A cheap, tokenizer-free estimate (about four characters per token, plus a
 * per-message overhead). It only sizes reservations and the demo provider's
 * usage; real usage always comes from the upstream.
 */
export function estimateTokens(text: string): number {
  return Math.ceil(text.length / 4);
}

export function estimatePromptTokens(request: ChatRequest): number {
  let total = 0;
  for (const m of request.messages) {
    total += 4 + estimateTokens(contentText(m.content));
    if (m.role === "assistant" && m.tool_calls) {
      for (const call of m.tool_calls) {
        total += estimateTokens(call.function.name + call.function.arguments);
      }
    }
  }
  for (const tool of request.tools ?? []) {
    total += estimateTokens(JSON.stringify(tool.function));
  }
  return total;
}
