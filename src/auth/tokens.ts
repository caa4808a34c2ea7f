import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeProtectedHeader,
  errors as joseErrors,
  jwtVerify,
  type JWTVerifyGetKey,
  SignJWT,
} from "jose";
import type { Clock } from "../clock.ts";
import type { Config } from "../config.ts";
import { GatewayError } from "../errors.ts";
import { ClaimsSchema, type Principal } from "./principal.ts";
import type { RevocationList } from "./revocation.ts";

/** Tokens this gateway signs itself are HS256 only; nothing else reaches that key. */
const LOCAL_ALG = "HS256";

export interface TokenServiceDeps {
  auth: Config["auth"];
  /** HS256 key for tokens this gateway issues (dev tokens, API-key logins). */
  secret: Uint8Array;
  /** Key set for tokens from an external identity provider, when configured. */
  jwks?: JWTVerifyGetKey;
  revocations: RevocationList;
  clock: Clock;
}

export interface MintOptions {
  user_id: string;
  tenant_id: string;
  roles: Principal["roles"];
  mode: Principal["mode"];
  ttl_s: number;
}

function invalid(reason: string): GatewayError {
  return new GatewayError("auth.invalid", reason);
}

/** Loads the JWKS named by config: a remote URL (cached by jose) or a local file. */
export async function loadJwks(auth: Config["auth"]): Promise<JWTVerifyGetKey | undefined> {
  if (auth.jwks_url) return createRemoteJWKSet(new URL(auth.jwks_url));
  if (auth.jwks_file) return createLocalJWKSet(JSON.parse(await Deno.readTextFile(auth.jwks_file)));
  return undefined;
}

/** Verified tokens kept, so a client reusing its token skips the signature check. */
const CACHE_MAX = 10_000;
/** A cached verification is trusted this long at most (JWKS keys can be rotated out). */
const CACHE_TTL_MS = 5 * 60_000;

export function createTokenService(deps: TokenServiceDeps) {
  const { auth, secret, jwks, revocations, clock } = deps;
  // Imported once: handing jose raw bytes re-imports the HMAC key on every call.
  const hmacKey = crypto.subtle.importKey(
    "raw",
    secret as Uint8Array<ArrayBuffer>,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign", "verify"],
  );
  const verified = new Map<string, { principal: Principal; until: number }>();

  async function mint(opts: MintOptions): Promise<{ token: string; expires_at: number }> {
    const nowS = Math.floor(clock.now() / 1000);
    const exp = nowS + opts.ttl_s;
    const jwt = new SignJWT({ tenant_id: opts.tenant_id, roles: opts.roles, mode: opts.mode })
      .setProtectedHeader({ alg: LOCAL_ALG, typ: "JWT" })
      .setSubject(opts.user_id)
      .setIssuer(auth.issuer)
      .setIssuedAt(nowS)
      .setNotBefore(nowS)
      .setExpirationTime(exp)
      .setJti(crypto.randomUUID());
    if (auth.audience) jwt.setAudience(auth.audience);
    return { token: await jwt.sign(await hmacKey), expires_at: exp };
  }

  /**
   * Verifies a bearer token. The key is chosen by the header's algorithm from
   * explicit allow-lists, so `none`, and HS256 tokens forged with a public key,
   * never reach a verifier that would accept them.
   */
  async function verify(token: string): Promise<Principal> {
    const hit = verified.get(token);
    if (hit && hit.until > clock.now()) {
      if (hit.principal.jti && revocations.isRevoked(hit.principal.jti)) {
        throw invalid("token has been revoked");
      }
      return hit.principal;
    }
    const principal = await verifyFully(token);
    if (principal.exp !== undefined) {
      if (verified.size >= CACHE_MAX) verified.delete(verified.keys().next().value!);
      verified.set(token, {
        principal,
        until: Math.min(principal.exp * 1000, clock.now() + CACHE_TTL_MS),
      });
    }
    return principal;
  }

  async function verifyFully(token: string): Promise<Principal> {
    let alg: string | undefined;
    try {
      alg = decodeProtectedHeader(token).alg;
    } catch {
      throw invalid("malformed token");
    }
    const common = {
      audience: auth.audience,
      clockTolerance: auth.clock_skew_s,
      currentDate: new Date(clock.now()),
      requiredClaims: ["exp", "sub"],
    };
    let payload: unknown;
    try {
      if (alg === LOCAL_ALG) {
        ({ payload } = await jwtVerify(token, await hmacKey, {
          ...common,
          algorithms: [LOCAL_ALG],
          issuer: auth.issuer,
        }));
      } else if (jwks && (auth.jwks_algorithms as string[]).includes(alg ?? "")) {
        ({ payload } = await jwtVerify(token, jwks, {
          ...common,
          algorithms: auth.jwks_algorithms,
          issuer: auth.jwks_issuer,
        }));
      } else {
        throw invalid(`token algorithm ${alg} is not accepted`);
      }
    } catch (err) {
      if (err instanceof GatewayError) throw err;
      if (err instanceof joseErrors.JWTExpired) throw invalid("token expired");
      if (err instanceof joseErrors.JWTClaimValidationFailed) {
        throw invalid(`token claim ${err.claim} is invalid`);
      }
      throw invalid("token signature or format is invalid");
    }
    const claims = ClaimsSchema.safeParse(payload);
    if (!claims.success) {
      throw invalid(`token claims are invalid: ${claims.error.issues[0].path.join(".")}`);
    }
    const { sub, ...rest } = claims.data;
    if (rest.jti && revocations.isRevoked(rest.jti)) throw invalid("token has been revoked");
    return { user_id: sub, ...rest };
  }

  return { mint, verify };
}

export type TokenService = ReturnType<typeof createTokenService>;
