import { type Context, SpanStatusCode, type Tracer } from "@opentelemetry/api";
import type { Clock } from "../clock.ts";
import { type FinishedRequest, RequestRecord } from "./request_record.ts";
import { startRequestSpan, traceIdOf } from "./tracing.ts";

export interface RequestScope {
  record: RequestRecord;
  /** Trace context of the request's root span. */
  ctx: Context;
}

/**
 * Opens one request: its root span (continuing an inbound `traceparent`) and
 * its record, whose end also ends the span. HTTP requests and WebSocket
 * frames that start a request both come through here.
 */
export function beginRequest(opts: {
  requestId: string;
  method: string;
  route: string;
  headers: Headers;
  /** The context the request arrived in; its server span, if any, becomes the parent. */
  active?: Context;
  clock: Clock;
  tracer: Tracer;
  onEnd: (done: FinishedRequest) => void;
}): RequestScope {
  const { span, ctx } = startRequestSpan(
    opts.tracer,
    opts.headers,
    `${opts.method} ${opts.route}`,
    {
      "http.request.method": opts.method,
      "url.path": opts.route,
      request_id: opts.requestId,
    },
    opts.active,
  );
  const traceId = traceIdOf(span);
  const record = new RequestRecord(
    opts.requestId,
    opts.method,
    opts.route,
    opts.clock.now(),
    (done) => {
      span.updateName(`${done.method} ${done.route}`);
      span.setAttributes({
        "http.route": done.route,
        "http.response.status_code": done.status,
        ...(done.tenant_id ? { tenant_id: done.tenant_id } : {}),
        ...(done.error_code ? { "error.type": done.error_code } : {}),
      });
      if (done.status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
      opts.onEnd({ ...done, trace_id: traceId });
    },
    () => opts.clock.now(),
  );
  return { record, ctx };
}
