import type { Context } from "hono";
import type { Served } from "./chat_service.ts";

/** Puts the guard's rate-limit and downgrade headers and the serving provider on a response. */
export function setServedHeaders(c: Context, served: Served): void {
  c.header("x-convergio-provider", served.provider);
  for (const [name, value] of Object.entries(served.headers)) c.header(name, value);
}
