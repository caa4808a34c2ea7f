import type { Principal } from "../auth/principal.ts";
import type { Config, ModelConfig } from "../config.ts";
import { GatewayError } from "../errors.ts";
import { costUsd } from "../metering/pricing.ts";
import type { RequestRecord } from "../obs/request_record.ts";
import type { ChatRequest } from "../providers/chat_schema.ts";
import { estimatePromptTokens, estimateTokens } from "../providers/token_estimate.ts";
import type { Routed, Router } from "../providers/router.ts";
import type { ChatResult, ProviderEvent, TokenUsage } from "../providers/types.ts";

/** The usage summary every response carries, in the contract's field names. */
export interface UsageSummary {
  in_tokens: number;
  out_tokens: number;
  tool_calls: number;
  audio_in_s: number;
  audio_out_s: number;
  cost_usd: number;
}

export interface ChatCall {
  principal: Principal;
  request: ChatRequest;
  record: RequestRecord;
  signal: AbortSignal;
}

export interface StreamingChat extends Routed {
  alias: string;
  events: AsyncIterable<ProviderEvent>;
  /**
   * Call once, when the stream is over. Without upstream usage (a stream cut
   * short), usage is estimated from the prompt and the text produced so far.
   */
  settle(usage: TokenUsage | null, produced: string, toolCalls: number): UsageSummary;
}

/**
 * The one path every chat request takes, whatever API or transport it came
 * in on: alias resolution, routing, and usage accounting on the record.
 */
export function createChatService(config: Config, router: Router) {
  function resolve(alias: string): ModelConfig {
    const model = config.models[alias];
    if (!model) {
      throw new GatewayError("request.invalid", `model: unknown model "${alias}"`, {
        param: "model",
      });
    }
    return model;
  }

  function summarize(
    model: ModelConfig,
    record: RequestRecord,
    usage: TokenUsage,
    toolCalls: number,
  ): UsageSummary {
    record.fields.input_tokens = usage.input_tokens;
    record.fields.output_tokens = usage.output_tokens;
    record.fields.tool_calls = toolCalls;
    return {
      in_tokens: usage.input_tokens,
      out_tokens: usage.output_tokens,
      tool_calls: toolCalls,
      audio_in_s: 0,
      audio_out_s: 0,
      cost_usd: costUsd(model.price, usage),
    };
  }

  function params(call: ChatCall, model: ModelConfig) {
    call.record.fields.model = call.request.model;
    return {
      alias: call.request.model,
      model,
      request: call.request,
      mode: call.principal.mode,
      tenantId: call.principal.tenant_id,
      signal: call.signal,
    };
  }

  async function complete(
    call: ChatCall,
  ): Promise<Routed & { alias: string; result: ChatResult; usage: UsageSummary }> {
    const model = resolve(call.request.model);
    const routed = await router.complete(params(call, model));
    call.record.fields.provider = routed.provider;
    const usage = summarize(
      model,
      call.record,
      routed.result.usage,
      routed.result.tool_calls.length,
    );
    return { ...routed, alias: call.request.model, usage };
  }

  async function stream(call: ChatCall): Promise<StreamingChat> {
    const model = resolve(call.request.model);
    const routed = await router.stream(params(call, model));
    call.record.fields.provider = routed.provider;
    return {
      ...routed,
      alias: call.request.model,
      settle: (usage, produced, toolCalls) =>
        summarize(
          model,
          call.record,
          usage ?? {
            input_tokens: estimatePromptTokens(call.request),
            output_tokens: estimateTokens(produced),
          },
          toolCalls,
        ),
    };
  }

  return { resolve, complete, stream };
}

export type ChatService = ReturnType<typeof createChatService>;
