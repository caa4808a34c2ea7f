import type { Context, MiddlewareHandler } from "hono";
import { publicOrigin } from "./session.ts";

/**
 * Scripts and styles only from the console's own assets. The JSON data
 * blocks are `type="application/json"`, which browsers never execute, so no
 * inline script needs allowing.
 */
export const CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

export const securityHeaders: MiddlewareHandler = async (c, next) => {
  await next();
  const h = c.res.headers;
  h.set("content-security-policy", CSP);
  h.set("x-content-type-options", "nosniff");
  h.set("x-frame-options", "DENY");
  // Same-origin requests keep their Referer, which the CSRF check may need.
  h.set("referrer-policy", "same-origin");
  // Pages show tenant data: never cached. Assets set their own policy.
  if (!h.has("cache-control")) h.set("cache-control", "no-store");
};

function refererOrigin(referer: string | undefined): string | undefined {
  if (!referer) return undefined;
  try {
    return new URL(referer).origin;
  } catch {
    return undefined;
  }
}

/**
 * A POST from another site is refused. The SameSite=Strict cookie already
 * leaves such a request unauthenticated; this also covers the login form (no
 * cookie yet) and browsers that ignore SameSite.
 */
export function sameOrigin(c: Context): boolean {
  const origin = c.req.header("origin") ?? refererOrigin(c.req.header("referer"));
  return origin === publicOrigin(c);
}
