import type { Context } from "hono";
import { GatewayError } from "../errors.ts";
import type { AppEnv } from "./context.ts";

const FORWARDED = ["authorization", "content-type", "accept", "traceparent"];

/**
 * On an edge-only deployment, the routes the aggregator owns (login, usage)
 * are forwarded to it with the caller's own credentials: the aggregator
 * checks them itself.
 */
export function forwardToAggregator(aggregatorUrl: string) {
  const base = aggregatorUrl.replace(/\/+$/, "");
  return async (c: Context<AppEnv>) => {
    const url = new URL(c.req.url);
    const headers = new Headers({ "x-request-id": c.var.requestId });
    for (const name of FORWARDED) {
      const value = c.req.header(name);
      if (value) headers.set(name, value);
    }
    let res: Response;
    try {
      res = await fetch(`${base}${url.pathname}${url.search}`, {
        method: c.req.method,
        headers,
        body: c.req.method === "GET" || c.req.method === "HEAD"
          ? undefined
          : await c.req.arrayBuffer(),
        signal: AbortSignal.timeout(10_000),
      });
    } catch (err) {
      throw new GatewayError("internal", "the aggregator is unreachable; try again shortly", {
        status: 503,
        retryable: true,
        cause: err,
      });
    }
    const out = new Headers(res.headers);
    out.set("x-request-id", c.var.requestId);
    return new Response(res.body, { status: res.status, headers: out });
  };
}
