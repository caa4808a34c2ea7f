import type { Context, MiddlewareHandler } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import type { AppEnv } from "../api/context.ts";
import type { TokenService } from "../auth/tokens.ts";
import type { Clock } from "../clock.ts";

const COOKIE = "cvg_console";
const PATH = "/console";

/** The app's request variables, plus the caller's JWT for in-process API calls. */
export interface ConsoleEnv {
  Variables: AppEnv["Variables"] & { jwt: string };
}

/** The origin the browser used: behind a TLS-terminating proxy, its `x-forwarded-proto` says https. */
export function publicOrigin(c: Context): string {
  const url = new URL(c.req.url);
  const proto = c.req.header("x-forwarded-proto")?.split(",")[0].trim();
  return `${proto === "https" || proto === "http" ? `${proto}:` : url.protocol}//${url.host}`;
}

/** Keeps the JWT for the token's lifetime; the browser never lets scripts or other sites see it. */
export function startSession(c: Context, jwt: string, exp: number | undefined, clock: Clock) {
  setCookie(c, COOKIE, jwt, {
    path: PATH,
    httpOnly: true,
    sameSite: "Strict",
    secure: publicOrigin(c).startsWith("https:"),
    ...(exp ? { maxAge: Math.max(0, Math.floor(exp - clock.now() / 1000)) } : {}),
  });
}

export function endSession(c: Context) {
  deleteCookie(c, COOKIE, { path: PATH, secure: publicOrigin(c).startsWith("https:") });
}

/** A console path to return to after login; anything else could send the user elsewhere. */
export function safeNext(next: unknown): string {
  if (typeof next !== "string" || !next.startsWith("/console")) return "/console";
  // Resolved as the browser will: dot segments and backslashes must not climb out.
  const base = "http://console.invalid";
  const url = new URL(next, base);
  const inside = url.origin === base &&
    (url.pathname === "/console" || url.pathname.startsWith("/console/"));
  return inside ? url.pathname + url.search : "/console";
}

/** The login page, returning to this page afterwards; a form POST cannot be replayed, so not to it. */
export function loginUrl(c: Context): string {
  const here = new URL(c.req.url);
  const next = c.req.method === "GET" ? safeNext(here.pathname + here.search) : "/console";
  return next === "/console" ? "/console/login" : `/console/login?next=${encodeURIComponent(next)}`;
}

/**
 * Admits requests carrying a valid session cookie and puts the caller on the
 * context; the token is verified exactly as the API's bearer auth does.
 * Anything else goes to the login page.
 */
export function requireSession(tokens: TokenService): MiddlewareHandler<ConsoleEnv> {
  return async (c, next) => {
    const jwt = getCookie(c, COOKIE);
    const principal = jwt ? await tokens.verify(jwt).catch(() => undefined) : undefined;
    if (!jwt || !principal) {
      if (jwt) endSession(c);
      return c.redirect(loginUrl(c), 303);
    }
    c.set("jwt", jwt);
    c.set("principal", principal);
    c.var.record.identify(principal);
    await next();
  };
}
