import { context, type Tracer } from "@opentelemetry/api";
import type { MiddlewareHandler } from "hono";
import { routePath } from "hono/route";
import type { Clock } from "../clock.ts";
import type { FinishedRequest } from "../obs/request_record.ts";
import { beginRequest } from "../obs/request_scope.ts";
import type { AppEnv } from "./context.ts";

/** Incoming ids are honoured only when they are safe to echo into logs and headers. */
const VALID_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export const newRequestId = () => `req_${crypto.randomUUID().replaceAll("-", "")}`;

/**
 * Assigns the request id, opens the request (root span and record), and ends
 * it for non-streamed replies; streams end it when they close.
 */
export function requestContext(
  onEnd: (done: FinishedRequest) => void,
  clock: Clock,
  tracer: Tracer,
): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const incoming = c.req.header("x-request-id");
    const requestId = incoming && VALID_REQUEST_ID.test(incoming) ? incoming : newRequestId();
    const { record, ctx } = beginRequest({
      requestId,
      method: c.req.method,
      route: c.req.path,
      headers: c.req.raw.headers,
      active: context.active(),
      clock,
      tracer,
      onEnd,
    });
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
