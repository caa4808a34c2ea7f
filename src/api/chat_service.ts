import type { Principal } from "../auth/principal.ts";
import type { Admission, Guard } from "../budget/guard.ts";
import type { Config, ModelConfig } from "../config.ts";
import { GatewayError } from "../errors.ts";
import { costUsd } from "../metering/pricing.ts";
import type { RequestRecord } from "../obs/request_record.ts";
import type { ChatRequest } from "../providers/chat_schema.ts";
import type { Routed, RouteParams, Router } from "../providers/router.ts";
import { estimatePromptTokens, estimateTokens } from "../providers/token_estimate.ts";
import type { ChatResult, ProviderEvent, TokenUsage } from "../providers/types.ts";

/** The usage summary every response carries, in the contract's field names. */
export interface UsageSummary {
  in_tokens: number;
  out_tokens: number;
  tool_calls: number;
  audio_in_s: number;
  audio_out_s: number;
  cost_usd: number;
  /** Set when the budget guard served a cheaper model than the one asked for. */
  downgraded_from?: string;
}

export interface ChatCall {
  principal: Principal;
  request: ChatRequest;
  record: RequestRecord;
  signal: AbortSignal;
}

/** What every answer carries besides the completion: the served alias and guard headers. */
export interface Served extends Routed {
  alias: string;
  headers: Record<string, string>;
}

export interface StreamingChat extends Served {
  events: AsyncIterable<ProviderEvent>;
  /**
   * Call once, when the stream is over. Without upstream usage (a stream cut
   * short), usage is estimated from the prompt and the text produced so far.
   */
  settle(usage: TokenUsage | null, produced: string, toolCalls: number): UsageSummary;
}

/** Response headers for an admission: rate limits, and the downgrade notice. */
function servedHeaders(admission: Admission): Record<string, string> {
  return admission.downgradedFrom
    ? { ...admission.headers, "x-convergio-downgraded-from": admission.downgradedFrom }
    : admission.headers;
}

/**
 * The one path every chat request takes, whatever API or transport it came
 * in on: alias resolution, the budget guard before any provider call,
 * routing, and usage accounting on the record.
 */
export function createChatService(config: Config, router: Router, guard: Guard) {
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
    call: ChatCall,
    admission: Admission,
    usage: TokenUsage,
    toolCalls: number,
  ): UsageSummary {
    const { record } = call;
    record.fields.input_tokens = usage.input_tokens;
    record.fields.output_tokens = usage.output_tokens;
    record.fields.tool_calls = toolCalls;
    admission.settle(usage);
    record.fields.cost_usd = costUsd(resolve(admission.alias).price, usage);
    return {
      in_tokens: usage.input_tokens,
      out_tokens: usage.output_tokens,
      tool_calls: toolCalls,
      audio_in_s: 0,
      audio_out_s: 0,
      cost_usd: record.fields.cost_usd,
      ...(admission.downgradedFrom ? { downgraded_from: admission.downgradedFrom } : {}),
    };
  }

  /** Resolves the alias and passes the guard; the admission must be settled once. */
  async function admit(call: ChatCall): Promise<{ admission: Admission; params: RouteParams }> {
    resolve(call.request.model);
    const admission = await guard.admit(call.principal, call.request, call.request.model);
    call.record.fields.model = admission.alias;
    return {
      admission,
      params: {
        alias: admission.alias,
        model: resolve(admission.alias),
        request: { ...call.request, model: admission.alias },
        mode: call.principal.mode,
        tenantId: call.principal.tenant_id,
        signal: call.signal,
      },
    };
  }

  async function complete(
    call: ChatCall,
  ): Promise<Served & { result: ChatResult; usage: UsageSummary }> {
    const { admission, params } = await admit(call);
    let routed;
    try {
      routed = await router.complete(params);
    } catch (err) {
      admission.settle(null);
      throw err;
    }
    call.record.fields.provider = routed.provider;
    const usage = summarize(call, admission, routed.result.usage, routed.result.tool_calls.length);
    return { ...routed, alias: admission.alias, headers: servedHeaders(admission), usage };
  }

  async function stream(call: ChatCall): Promise<StreamingChat> {
    const { admission, params } = await admit(call);
    let routed;
    try {
      routed = await router.stream(params);
    } catch (err) {
      admission.settle(null);
      throw err;
    }
    call.record.fields.provider = routed.provider;
    return {
      ...routed,
      alias: admission.alias,
      headers: servedHeaders(admission),
      settle: (usage, produced, toolCalls) =>
        summarize(
          call,
          admission,
          usage ?? {
            input_tokens: estimatePromptTokens(params.request),
            output_tokens: estimateTokens(produced),
          },
          toolCalls,
        ),
    };
  }

  return { resolve, complete, stream };
}

export type ChatService = ReturnType<typeof createChatService>;
