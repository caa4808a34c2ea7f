import type { Tracer } from "@opentelemetry/api";
import { SpanStatusCode } from "@opentelemetry/api";
import type { MiddlewareHandler } from "hono";
import { routePath } from "hono/route";
import { startRequestSpan, traceIdOf } from "../obs/tracing.ts";
import type { Clock } from "../clock.ts";
import { type FinishedRequest, RequestRecord } from "../obs/request_record.ts";
import type { AppEnv } from "./context.ts";

/** Incoming ids are honoured only when they are safe to echo into logs and headers. */
const VALID_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Assigns the request id, opens the request's root span (continuing an
 * inbound `traceparent`), starts its record, and ends both for non-streamed
 * replies; streams end them when they close.
 */
export function requestContext(
  onEnd: (done: FinishedRequest) => void,
  clock: Clock,
  tracer: Tracer,
): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const incoming = c.req.header("x-request-id");
    const requestId = incoming && VALID_REQUEST_ID.test(incoming)
      ? incoming
      : `req_${crypto.randomUUID().replaceAll("-", "")}`;
    const { span, ctx } = startRequestSpan(
      tracer,
      c.req.raw.headers,
      `${c.req.method} ${c.req.path}`,
      {
        "http.request.method": c.req.method,
        "url.path": c.req.path,
        request_id: requestId,
      },
    );
    const traceId = traceIdOf(span);
    const record = new RequestRecord(
      requestId,
      c.req.method,
      c.req.path,
      clock.now(),
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
        onEnd({ ...done, trace_id: traceId });
      },
      () => clock.now(),
    );
    c.set("requestId", requestId);
    c.set("record", record);
    c.set("errorShape", "v7");
    c.set("trace", ctx);
    c.header("x-request-id", requestId);
    await next();
    record.fields.route = routePath(c, -1);
    if (!record.deferred) record.end(c.res.status);
  };
}
