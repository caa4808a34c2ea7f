import type { ControlView } from "./view.ts";

/** How the router orders an alias's deployments for one request. */
export interface RoutePolicy {
  order: "priority" | "cheapest";
  /** Only this provider's deployments, when the alias has any. */
  force?: string;
  /** This provider's deployments go last. */
  avoid?: string;
}

/**
 * The routing_policy flag for the tenant, then the RB-1 mitigations on top:
 * force_cheaper_provider beats the flag, and avoid_provider applies to all.
 */
export function routePolicy(view: ControlView, tenant: string): RoutePolicy {
  const flag = view.flag("routing_policy", tenant);
  const avoid = view.mitigation("avoid_provider")?.params.provider as string | undefined;
  if (view.mitigation("force_cheaper_provider")) return { order: "cheapest", avoid };
  if (flag.startsWith("force:")) return { order: "priority", force: flag.slice(6), avoid };
  return { order: flag as RoutePolicy["order"], avoid };
}
