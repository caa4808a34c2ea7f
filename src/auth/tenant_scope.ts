import { GatewayError } from "../errors.ts";
import type { Principal } from "./principal.ts";

/**
 * The tenant a caller may act on. Platform admins may name any tenant;
 * tenant admins only their own, whatever they ask for; others nothing.
 */
export function scopedTenant(p: Principal, requested: string | undefined): string | undefined {
  if (p.roles.includes("admin")) return requested;
  if (p.roles.includes("tenant_admin")) {
    if (requested && requested !== p.tenant_id) {
      throw new GatewayError("auth.forbidden", "tenant admins can only read their own tenant");
    }
    return p.tenant_id;
  }
  throw new GatewayError("auth.forbidden", "this needs the admin or tenant_admin role");
}
