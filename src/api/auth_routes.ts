import { Hono, type MiddlewareHandler } from "hono";
import { z } from "zod";
import type { ApiKeyStore } from "../auth/api_keys.ts";
import type { RevocationList } from "../auth/revocation.ts";
import type { TokenService } from "../auth/tokens.ts";
import type { Guard } from "../budget/guard.ts";
import { tenantLimits } from "../budget/limits.ts";
import { StoreUnavailable } from "../budget/store.ts";
import type { Config } from "../config.ts";
import { GatewayError } from "../errors.ts";
import { parseBody } from "./body.ts";
import type { AppEnv } from "./context.ts";

const LoginSchema = z.strictObject({ api_key: z.string().min(1).max(256) });

/** API-key login, on the aggregator, which holds the keys. */
export function loginRoutes(deps: { config: Config; tokens: TokenService; apiKeys: ApiKeyStore }) {
  const { config, tokens, apiKeys } = deps;
  const app = new Hono<AppEnv>();
  app.post("/auth/login", async (c) => {
    const { api_key } = await parseBody(c, LoginSchema);
    const key = await apiKeys.find(api_key);
    if (!key) throw new GatewayError("auth.invalid", "unknown or revoked API key");
    const ttl = config.auth.login_ttl_s;
    const { token } = await tokens.mint({
      user_id: key.user_id,
      tenant_id: key.tenant_id,
      roles: key.roles,
      mode: key.mode,
      ttl_s: ttl,
    });
    c.var.record.fields.tenant_id = key.tenant_id;
    c.var.record.fields.user_id = key.user_id;
    return c.json({
      access_token: token,
      token_type: "Bearer",
      expires_in: ttl,
      request_id: c.var.requestId,
    });
  });
  return app;
}

export interface SessionRouteDeps {
  config: Config;
  revocations: RevocationList;
  requireAuth: MiddlewareHandler<AppEnv>;
  guard: Guard;
}

/** Logout and who-am-I, on the edge. */
export function sessionRoutes(deps: SessionRouteDeps) {
  const { config, revocations, requireAuth, guard } = deps;
  const app = new Hono<AppEnv>();

  app.post("/auth/logout", requireAuth, (c) => {
    const { jti, exp } = c.var.principal;
    if (!jti || !exp) {
      throw new GatewayError("request.invalid", "this token has no jti and cannot be revoked");
    }
    revocations.revoke(jti, exp * 1000);
    return c.json({ revoked: true, request_id: c.var.requestId });
  });

  app.get("/me", requireAuth, async (c) => {
    const principal = c.var.principal;
    const { user_id, tenant_id, roles, mode } = principal;
    let budget = null;
    try {
      budget = await guard.state(principal);
    } catch (err) {
      if (!(err instanceof StoreUnavailable)) throw err;
    }
    return c.json({
      user_id,
      tenant_id,
      roles,
      mode,
      limits: tenantLimits(config, tenant_id),
      budget,
      request_id: c.var.requestId,
    });
  });

  return app;
}
