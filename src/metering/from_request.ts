import type { FinishedRequest } from "../obs/request_record.ts";
import type { UsageEvent } from "./usage_event.ts";

/** The usage event of a finished metered request; undefined when it cannot be attributed. */
export function usageEventOf(r: FinishedRequest): UsageEvent | undefined {
  if (!r.metered || !r.tenant_id || !r.user_id || !r.mode) return undefined;
  const success = r.status < 400;
  return {
    request_id: r.request_id,
    tenant_id: r.tenant_id,
    user_id: r.user_id,
    session_id: r.session_id ?? null,
    provider: r.provider ?? null,
    model: r.model ?? null,
    input_tokens: r.input_tokens,
    output_tokens: r.output_tokens,
    tool_calls_count: r.tool_calls,
    audio_seconds_in: r.audio_seconds_in,
    audio_seconds_out: r.audio_seconds_out,
    latency_ms: Math.max(0, Math.round(r.latency_ms)),
    ttft_ms: r.ttft_ms === undefined ? null : Math.max(0, Math.round(r.ttft_ms)),
    success,
    error_code: success ? null : (r.error_code ?? "internal"),
    mode: r.mode,
    lane: r.mode,
    cost_usd: r.cost_usd,
    occurred_at: new Date(r.started_at).toISOString(),
  };
}
