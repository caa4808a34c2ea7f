import { type Context, type Span, trace, type Tracer } from "@opentelemetry/api";
import type { Principal } from "../auth/principal.ts";
import type { Admission, Guard } from "../budget/guard.ts";
import type { Clock } from "../clock.ts";
import type { Config, ModelConfig } from "../config.ts";
import { GatewayError, toGatewayError } from "../errors.ts";
import { costUsd } from "../metering/pricing.ts";
import type { Metrics } from "../obs/metrics.ts";
import type { RequestRecord } from "../obs/request_record.ts";
import { failSpan, genAiProviderName, inSpan } from "../obs/tracing.ts";
import type { ChatRequest } from "../providers/chat_schema.ts";
import type { Routed, RoutedStream, RouteParams, Router } from "../providers/router.ts";
import { estimatePromptTokens, estimateTokens } from "../providers/token_estimate.ts";
import type { ChatResult, ProviderEvent, TokenUsage } from "../providers/types.ts";
import type { AuditEntry } from "../control/audit.ts";
import { routePolicy } from "../control/route_policy.ts";
import { policeRequestTools, policeToolCall, ToolDenied } from "../control/tool_policy.ts";
import type { ControlView } from "../control/view.ts";

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
  /** The request's trace context: this call's spans are its children. */
  trace: Context;
  transport: "http" | "sse" | "ws";
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

export interface ChatServiceDeps {
  config: Config;
  router: Router;
  guard: Guard;
  metrics: Metrics;
  tracer: Tracer;
  clock: Clock;
  control: ControlView;
  /** Records a tool denial in the audit log (through the aggregator on an edge). */
  audit: (entry: AuditEntry) => void;
}

/** Response headers for an admission: rate limits, and the downgrade notice. */
function servedHeaders(admission: Admission): Record<string, string> {
  return admission.downgradedFrom
    ? { ...admission.headers, "x-convergio-downgraded-from": admission.downgradedFrom }
    : admission.headers;
}

const GUARDRAIL_OF: Partial<Record<string, string>> = {
  "budget.blocked": "block",
  "quota.exceeded": "rate_limit",
};

/**
 * The one path every chat request takes, whatever API or transport it came
 * in on: alias resolution, the budget guard before any provider call,
 * routing, usage accounting, and the spans and metrics of each step.
 */
export function createChatService(deps: ChatServiceDeps) {
  const { config, router, guard, metrics, tracer, clock, control } = deps;

  /** Every refused tool is counted and audited, whichever way it went. */
  function denied(call: ChatCall, err: ToolDenied): ToolDenied {
    metrics.toolDenials.inc({ direction: err.direction });
    deps.audit({
      actor: call.principal.user_id,
      actor_tenant: call.principal.tenant_id,
      action: "tool.denied",
      target: `tenant:${call.principal.tenant_id}`,
      before: null,
      after: { tool: err.tool, direction: err.direction, model: call.request.model },
      request_id: call.record.fields.request_id ?? null,
      reason: err.message,
    });
    return err;
  }

  const checkToolCall = (call: ChatCall, request: ChatRequest, name: string) => {
    try {
      policeToolCall(control, call.principal.tenant_id, request, name);
    } catch (err) {
      throw err instanceof ToolDenied ? denied(call, err) : err;
    }
  };

  function resolve(alias: string): ModelConfig {
    const model = config.models[alias];
    if (!model) {
      throw new GatewayError("request.invalid", `model: unknown model "${alias}"`, {
        param: "model",
      });
    }
    if (config.providers[model.deployments[0].provider].protocol.startsWith("realtime_")) {
      throw new GatewayError(
        "request.invalid",
        `model: "${alias}" is a voice model; use /v1/voice/ws`,
        { param: "model" },
      );
    }
    return model;
  }

  const providerName = (provider: string | undefined) => {
    const p = provider ? config.providers[provider] : undefined;
    return p ? genAiProviderName(p.protocol, "flavor" in p ? p.flavor : undefined) : "none";
  };

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
    const labels = {
      gen_ai_provider_name: providerName(record.fields.provider),
      gen_ai_request_model: admission.alias,
    };
    metrics.tokenUsage.observe({ ...labels, gen_ai_token_type: "input" }, usage.input_tokens);
    metrics.tokenUsage.observe({ ...labels, gen_ai_token_type: "output" }, usage.output_tokens);
    if (toolCalls) {
      metrics.toolCalls.inc({ gen_ai_request_model: admission.alias }, toolCalls);
      tracer.startSpan(
        "tool calls",
        { attributes: { "convergio.tool_calls": toolCalls } },
        call.trace,
      )
        .end();
    }
    trace.getSpan(call.trace)?.setAttributes({
      "gen_ai.usage.input_tokens": usage.input_tokens,
      "gen_ai.usage.output_tokens": usage.output_tokens,
    });
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
    const tenant = call.principal.tenant_id;
    let request: ChatRequest;
    try {
      request = policeRequestTools(control, tenant, call.request);
    } catch (err) {
      throw err instanceof ToolDenied ? denied(call, err) : err;
    }
    // RB-2's lower_model: every chat alias is served on the smaller one.
    const lowered = control.mitigation("lower_model")?.params.to as string | undefined;
    const asked = lowered && lowered !== request.model && config.models[lowered]
      ? lowered
      : request.model;
    const root = trace.getSpan(call.trace);
    root?.setAttributes({
      tenant_id: call.principal.tenant_id,
      "gen_ai.operation.name": "chat",
      "gen_ai.request.model": call.request.model,
    });
    const admission = await inSpan(
      tracer,
      call.trace,
      "metering",
      { tenant_id: call.principal.tenant_id, "convergio.lane": call.principal.mode },
      async (span) => {
        try {
          const a = await guard.admit(call.principal, request, asked);
          if (asked !== request.model) a.downgradedFrom ??= request.model;
          if (a.downgradedFrom) {
            call.record.fields.guardrail = "downgrade";
            span.setAttribute("convergio.guardrail", "downgrade");
          }
          return a;
        } catch (err) {
          call.record.fields.guardrail = GUARDRAIL_OF[toGatewayError(err).code];
          throw err;
        }
      },
    );
    call.record.fields.model = admission.alias;
    return {
      admission,
      params: {
        alias: admission.alias,
        model: resolve(admission.alias),
        request: { ...request, model: admission.alias },
        mode: call.principal.mode,
        tenantId: tenant,
        signal: call.signal,
        policy: routePolicy(control, tenant),
      },
    };
  }

  /** Runs a provider call in its GenAI span, timing it for the overhead and duration metrics. */
  async function providerCall<T extends Routed>(
    call: ChatCall,
    params: RouteParams,
    run: () => Promise<T>,
    describe: (r: T, span: Span) => void,
  ): Promise<T> {
    const started = clock.now();
    const attributes = { "gen_ai.operation.name": "chat", "gen_ai.request.model": params.alias };
    let errorType = "";
    try {
      return await inSpan(tracer, call.trace, `chat ${params.alias}`, attributes, async (span) => {
        const r = await run();
        call.record.fields.provider = r.provider;
        span.setAttributes({
          "gen_ai.provider.name": providerName(r.provider),
          "convergio.provider": r.provider,
          "convergio.deployment": r.deployment,
          "convergio.attempts": r.attempts,
        });
        describe(r, span);
        return r;
      });
    } catch (err) {
      errorType = toGatewayError(err).code;
      throw err;
    } finally {
      const elapsed = clock.now() - started;
      call.record.providerMs += elapsed;
      metrics.operationDuration.observe({
        gen_ai_operation_name: "chat",
        gen_ai_provider_name: providerName(call.record.fields.provider),
        gen_ai_request_model: params.alias,
        error_type: errorType,
      }, elapsed / 1000);
    }
  }

  async function complete(
    call: ChatCall,
  ): Promise<Served & { result: ChatResult; usage: UsageSummary }> {
    const { admission, params } = await admit(call);
    let routed;
    try {
      routed = await providerCall(call, params, () => router.complete(params), (r, span) => {
        span.setAttributes({
          "gen_ai.response.model": r.result.model,
          "gen_ai.usage.input_tokens": r.result.usage.input_tokens,
          "gen_ai.usage.output_tokens": r.result.usage.output_tokens,
        });
      });
    } catch (err) {
      admission.settle(null);
      throw err;
    }
    const usage = summarize(call, admission, routed.result.usage, routed.result.tool_calls.length);
    for (const t of routed.result.tool_calls) checkToolCall(call, params.request, t.function.name);
    return { ...routed, alias: admission.alias, headers: servedHeaders(admission), usage };
  }

  async function stream(call: ChatCall): Promise<StreamingChat> {
    const { admission, params } = await admit(call);
    let routed: RoutedStream;
    try {
      routed = await providerCall(call, params, () => router.stream(params), () => {});
    } catch (err) {
      admission.settle(null);
      throw err;
    }
    const firstAt = clock.now();
    call.record.ttftMs = firstAt - call.record.startedAtMs;
    metrics.timeToFirstToken.observe({
      gen_ai_provider_name: providerName(routed.provider),
      gen_ai_request_model: admission.alias,
      transport: call.transport,
    }, call.record.ttftMs / 1000);
    const span = tracer.startSpan("stream", {
      attributes: { "convergio.transport": call.transport },
    }, call.trace);
    let model = params.alias;
    // A refused call never reaches the client, but it was made: metered like a non-streamed one.
    let refused = 0;
    async function* events(): AsyncGenerator<ProviderEvent> {
      try {
        for await (const ev of routed.events) {
          if (ev.type === "done") model = ev.model;
          if (ev.type === "tool_call" && ev.name) {
            try {
              checkToolCall(call, params.request, ev.name);
            } catch (err) {
              refused++;
              throw err;
            }
          }
          yield ev;
        }
      } catch (err) {
        failSpan(span, err);
        throw err;
      }
    }
    return {
      ...routed,
      events: events(),
      alias: admission.alias,
      headers: servedHeaders(admission),
      settle: (usage, produced, toolCalls) => {
        call.record.providerMs += clock.now() - firstAt;
        const summary = summarize(
          call,
          admission,
          usage ?? {
            input_tokens: estimatePromptTokens(params.request),
            output_tokens: estimateTokens(produced),
          },
          toolCalls + refused,
        );
        span.setAttributes({
          "gen_ai.response.model": model,
          "gen_ai.usage.input_tokens": summary.in_tokens,
          "gen_ai.usage.output_tokens": summary.out_tokens,
        });
        span.end();
        return summary;
      },
    };
  }

  return { resolve, complete, stream };
}

export type ChatService = ReturnType<typeof createChatService>;
