import type { Principal } from "../auth/principal.ts";
import type { Logger } from "./log.ts";

/** The per-request log line's fields, as the spec lists them. */
export interface RequestLogFields {
  request_id: string;
  method: string;
  route: string;
  tenant_id?: string;
  user_id?: string;
  mode?: string;
  provider?: string;
  model?: string;
  input_tokens: number;
  output_tokens: number;
  tool_calls: number;
  audio_seconds: number;
  error_code?: string;
}

/**
 * Collects what a request did and writes exactly one log line when it ends.
 * Streaming handlers defer the end until the stream closes, so the line has
 * the final token counts and latency.
 */
export class RequestRecord {
  readonly fields: RequestLogFields;
  #deferred = false;
  #ended = false;

  constructor(
    requestId: string,
    method: string,
    route: string,
    private readonly startedAt: number,
    private readonly log: Logger,
    private readonly now: () => number,
  ) {
    this.fields = {
      request_id: requestId,
      method,
      route,
      input_tokens: 0,
      output_tokens: 0,
      tool_calls: 0,
      audio_seconds: 0,
    };
  }

  identify(p: Principal): void {
    this.fields.tenant_id = p.tenant_id;
    this.fields.user_id = p.user_id;
    this.fields.mode = p.mode;
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
    this.log.info("request", {
      ...this.fields,
      status,
      latency_ms: this.now() - this.startedAt,
    });
  }
}
