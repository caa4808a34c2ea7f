import type { Child } from "hono/jsx";
import type { Principal } from "../auth/principal.ts";
import type { Clock } from "../clock.ts";
import type { ApiClient } from "./api_client.ts";
import type { Section } from "./layout.tsx";

/** What a view gets: the API as the caller, who the caller is, and the page's query. */
export interface ViewContext {
  api: ApiClient;
  principal: Principal;
  clock: Clock;
  query(name: string): string | undefined;
}

export interface Page {
  title: string;
  section: Section;
  body: Child;
}

/** A view loads its data from the API and renders it; API refusals propagate as ApiError. */
export type View = (ctx: ViewContext) => Promise<Page>;

/** `?name=` when it is one of `allowed`, else the default. */
export function choice<T extends string>(
  ctx: ViewContext,
  name: string,
  allowed: readonly T[],
  fallback: T,
): T {
  const v = ctx.query(name);
  return allowed.includes(v as T) ? v as T : fallback;
}
