import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "../api/context.ts";
import type { Role } from "../config.ts";
import { GatewayError } from "../errors.ts";

/** Admits callers holding one of `roles`; others get 403 `auth.forbidden`. */
export function requireRole(...roles: Role[]): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    if (!c.get("principal").roles.some((r) => roles.includes(r))) {
      throw new GatewayError("auth.forbidden", `this needs one of the roles: ${roles.join(", ")}`);
    }
    await next();
  };
}
