import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "../api/context.ts";
import { GatewayError } from "../errors.ts";
import type { TokenService } from "./tokens.ts";
import type { Tracer } from "@opentelemetry/api";
import { inSpan } from "../obs/tracing.ts";

/** Extracts the bearer token; `undefined` when the header is absent or malformed. */
export function bearerToken(header: string | undefined): string | undefined {
  const match = /^Bearer\s+(\S+)$/i.exec(header ?? "");
  return match?.[1];
}

/** Requires a valid bearer JWT and puts the caller on the context as `principal`. */
export function bearerAuth(tokens: TokenService, tracer: Tracer): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const principal = await inSpan(tracer, c.get("trace"), "auth", {}, async (span) => {
      const token = bearerToken(c.req.header("authorization"));
      if (!token) throw new GatewayError("auth.invalid", "missing bearer token");
      const p = await tokens.verify(token);
      span.setAttribute("tenant_id", p.tenant_id);
      return p;
    });
    c.set("principal", principal);
    c.get("record").identify(principal);
    await next();
  };
}
