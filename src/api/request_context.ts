import type { MiddlewareHandler } from "hono";
import type { Clock } from "../clock.ts";
import { type FinishedRequest, RequestRecord } from "../obs/request_record.ts";
import type { AppEnv } from "./context.ts";

/** Incoming ids are honoured only when they are safe to echo into logs and headers. */
const VALID_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Assigns the request id, starts the request's record, and ends it for non-streamed replies. */
export function requestContext(
  onEnd: (done: FinishedRequest) => void,
  clock: Clock,
): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const incoming = c.req.header("x-request-id");
    const requestId = incoming && VALID_REQUEST_ID.test(incoming)
      ? incoming
      : `req_${crypto.randomUUID().replaceAll("-", "")}`;
    const record = new RequestRecord(
      requestId,
      c.req.method,
      c.req.path,
      clock.now(),
      onEnd,
      () => clock.now(),
    );
    c.set("requestId", requestId);
    c.set("record", record);
    c.set("errorShape", "v7");
    c.header("x-request-id", requestId);
    await next();
    if (!record.deferred) record.end(c.res.status);
  };
}
