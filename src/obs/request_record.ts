import type { Principal } from "../auth/principal.ts";

/** The per-request log line's fields, as the spec lists them. */
export interface RequestLogFields {
  request_id: string;
  method: string;
  route: string;
  tenant_id?: string;
  user_id?: string;
  mode?: Principal["mode"];
  session_id?: string;
  provider?: string;
  model?: string;
  input_tokens: number;
  output_tokens: number;
  tool_calls: number;
  audio_seconds_in: number;
  audio_seconds_out: number;
  cost_usd: number;
  error_code?: string;
  /** Guardrail action taken on this request, if any (downgrade, block, rate_limit). */
  guardrail?: string;
  trace_id?: string;
}

/** What a finished request reports, once. */
export interface FinishedRequest extends RequestLogFields {
  status: number;
  latency_ms: number;
  started_at: number;
  /** True for requests that produce a usage event (chat, voice). */
  metered: boolean;
  streaming: boolean;
  /** Time spent waiting on providers, so the gateway's own overhead can be told apart. */
  provider_ms: number;
  /** Time to the first streamed token, when there was one. */
  ttft_ms?: number;
}

/**
 * Collects what a request did and reports it exactly once when it ends: the
 * log line and, for metered requests, the usage event. Streaming handlers
 * defer the end until the stream closes, so the report has final counts.
 */
export class RequestRecord {
  readonly fields: RequestLogFields;
  /** Set by metered routes, so even their refusals produce a usage event. */
  metered = false;
  providerMs = 0;
  ttftMs?: number;
  #deferred = false;
  #ended = false;

  constructor(
    requestId: string,
    method: string,
    route: string,
    private readonly startedAt: number,
    private readonly onEnd: (done: FinishedRequest) => void,
    private readonly now: () => number,
  ) {
    this.fields = {
      request_id: requestId,
      method,
      route,
      input_tokens: 0,
      output_tokens: 0,
      tool_calls: 0,
      audio_seconds_in: 0,
      audio_seconds_out: 0,
      cost_usd: 0,
    };
  }

  identify(p: Principal): void {
    this.fields.tenant_id = p.tenant_id;
    this.fields.user_id = p.user_id;
    this.fields.mode = p.mode;
  }

  /** When the request started, in clock milliseconds. */
  get startedAtMs(): number {
    return this.startedAt;
  }

  /** Hands the end of this record to the stream that outlives the handler. */
  defer(): void {
    this.#deferred = true;
  }

  get deferred(): boolean {
    return this.#deferred;
  }

  end(status: number): void {
    if (this.#ended) return;
    this.#ended = true;
    this.onEnd({
      ...this.fields,
      status,
      latency_ms: this.now() - this.startedAt,
      started_at: this.startedAt,
      metered: this.metered,
      streaming: this.#deferred,
      provider_ms: this.providerMs,
      ttft_ms: this.ttftMs,
    });
  }
}
