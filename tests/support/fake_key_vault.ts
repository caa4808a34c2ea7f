/**
 * A local Azure Key Vault (secrets, api-version 7.4) with the two ways to get
 * a token for it: the managed identity endpoint (IMDS) and Entra ID's client
 * credentials grant. It speaks the real REST shapes, issues its own bearer
 * tokens with an expiry on its own clock, and refuses calls without a valid one.
 * Soft delete is modelled: a deleted secret's name stays taken until purged.
 */

const SCOPE = "https://vault.azure.net";
const API_VERSION = "7.4";

export interface VaultSecret {
  value: string;
  contentType?: string;
  tags?: Record<string, string>;
  version: string;
}

export interface VaultCall {
  method: string;
  path: string;
  status: number;
}

export interface FakeKeyVaultOptions {
  /** The fake's clock in ms (token expiry); Date.now when absent. */
  now?: () => number;
  /** How long issued tokens live. */
  tokenLifetimeS?: number;
  /** The app registration the client credentials grant accepts. */
  app?: { tenantId: string; clientId: string; clientSecret: string };
  /** false: the host has no managed identity, and IMDS says so. */
  managedIdentity?: boolean;
}

export interface FakeKeyVault {
  /** The vault URL (`vault_url`). */
  url: string;
  /** The managed identity token endpoint (`imds_url`). */
  imdsUrl: string;
  /** Entra ID's authority (`authority_url`). */
  authorityUrl: string;
  secrets: Map<string, VaultSecret>;
  /** Soft-deleted secrets, by name, until purged. */
  deleted: Map<string, VaultSecret>;
  /** Token requests served, by endpoint. */
  tokenRequests: { imds: URLSearchParams[]; entra: URLSearchParams[] };
  /** Every call to the vault itself, with the status it got. */
  calls: VaultCall[];
  /** Forgets every issued token: calls with one are refused until a new one is fetched. */
  revokeTokens(): void;
  /** Answers every vault call (after authentication) with this error until cleared. */
  failWith(failure?: { status: number; code: string; message: string }): void;
  close(): Promise<void>;
}

const vaultError = (status: number, code: string, message: string, headers: HeadersInit = {}) =>
  Response.json({ error: { code, message } }, { status, headers });

/** Entra ID's error shape (AADSTS codes). */
const entraError = (status: number, error: string, description: string) =>
  Response.json({ error, error_description: description }, { status });

export function startFakeKeyVault(opts: FakeKeyVaultOptions = {}): FakeKeyVault {
  const now = opts.now ?? Date.now;
  const lifetimeS = opts.tokenLifetimeS ?? 3600;
  const secrets = new Map<string, VaultSecret>();
  const deleted = new Map<string, VaultSecret>();
  const tokens = new Map<string, number>();
  const tokenRequests = { imds: [] as URLSearchParams[], entra: [] as URLSearchParams[] };
  const calls: VaultCall[] = [];
  let failure: { status: number; code: string; message: string } | undefined;
  let origin = "";

  const issue = () => {
    const token = `fake-aad-token-${crypto.randomUUID()}`;
    tokens.set(token, now() + lifetimeS * 1000);
    return token;
  };

  function imds(req: Request, url: URL): Response {
    const q = url.searchParams;
    tokenRequests.imds.push(q);
    if (req.method !== "GET") return vaultError(405, "MethodNotAllowed", "GET only");
    if (req.headers.get("metadata") !== "true") {
      return Response.json({
        error: "invalid_request",
        error_description: "Required metadata header not specified",
      }, {
        status: 400,
      });
    }
    if (opts.managedIdentity === false) {
      return Response.json({ error: "invalid_request", error_description: "Identity not found" }, {
        status: 400,
      });
    }
    if (q.get("api-version") !== "2018-02-01" || q.get("resource") !== SCOPE) {
      return Response.json({
        error: "invalid_request",
        error_description: "bad api-version or resource",
      }, {
        status: 400,
      });
    }
    return Response.json({
      access_token: issue(),
      expires_on: String(Math.floor(now() / 1000) + lifetimeS),
      resource: SCOPE,
      token_type: "Bearer",
    });
  }

  async function entra(req: Request, tenant: string): Promise<Response> {
    const form = new URLSearchParams(await req.text());
    tokenRequests.entra.push(form);
    const app = opts.app;
    if (req.method !== "POST") return entraError(405, "invalid_request", "POST only");
    if (!req.headers.get("content-type")?.startsWith("application/x-www-form-urlencoded")) {
      return entraError(400, "invalid_request", "AADSTS900144: The request body must be a form");
    }
    if (form.get("grant_type") !== "client_credentials") {
      return entraError(400, "unsupported_grant_type", "AADSTS70003: unsupported grant type");
    }
    if (form.get("scope") !== `${SCOPE}/.default`) {
      return entraError(400, "invalid_scope", "AADSTS70011: The provided scope is not valid");
    }
    if (!app || tenant !== app.tenantId) {
      return entraError(400, "invalid_request", `AADSTS90002: Tenant '${tenant}' not found`);
    }
    if (form.get("client_id") !== app.clientId) {
      return entraError(400, "unauthorized_client", "AADSTS700016: Application not found");
    }
    if (form.get("client_secret") !== app.clientSecret) {
      return entraError(401, "invalid_client", "AADSTS7000215: Invalid client secret provided");
    }
    return Response.json({
      token_type: "Bearer",
      // Entra reports one second less than the token lives (3599 for an hour).
      expires_in: lifetimeS - 1,
      ext_expires_in: lifetimeS,
      access_token: issue(),
    });
  }

  const bundle = (name: string, s: VaultSecret) => ({
    value: s.value,
    contentType: s.contentType,
    id: `${origin}/secrets/${name}/${s.version}`,
    attributes: {
      enabled: true,
      created: Math.floor(now() / 1000),
      updated: Math.floor(now() / 1000),
      recoveryLevel: "Recoverable+Purgeable",
      recoverableDays: 90,
    },
    tags: s.tags,
  });

  async function vault(req: Request, url: URL): Promise<Response> {
    const auth = req.headers.get("authorization") ?? "";
    const token = /^Bearer (\S+)$/.exec(auth)?.[1];
    const until = token ? tokens.get(token) : undefined;
    if (until === undefined || until <= now()) {
      return vaultError(
        401,
        "Unauthorized",
        "AKV10000: Request is missing a Bearer or PoP token.",
        {
          "www-authenticate":
            `Bearer authorization="https://login.microsoftonline.com/common", resource="${SCOPE}"`,
        },
      );
    }
    if (url.searchParams.get("api-version") !== API_VERSION) {
      return vaultError(400, "BadParameter", "The specified version is not recognized");
    }
    if (failure) return vaultError(failure.status, failure.code, failure.message);
    const m = /^\/(secrets|deletedsecrets)\/([^/]+)$/.exec(url.pathname);
    if (!m) return vaultError(404, "NotFound", "no such operation");
    const [, kind, name] = m;
    if (!/^[0-9a-zA-Z-]{1,127}$/.test(name)) {
      return vaultError(400, "BadParameter", "The secret name is invalid");
    }
    const notFound = () =>
      vaultError(
        404,
        "SecretNotFound",
        `A secret with (name/id) ${name} was not found in this key vault.`,
      );
    if (kind === "deletedsecrets") {
      if (req.method !== "DELETE") return vaultError(405, "BadParameter", "unsupported");
      if (!deleted.delete(name)) {
        return vaultError(404, "SecretNotFound", `Deleted Secret not found: ${name}`);
      }
      return new Response(null, { status: 204 });
    }
    if (req.method === "PUT") {
      if (deleted.has(name)) {
        return vaultError(
          409,
          "Conflict",
          `Secret ${name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged.`,
        );
      }
      const body = await req.json() as Omit<VaultSecret, "version">;
      if (typeof body.value !== "string") {
        return vaultError(400, "BadParameter", "value is required");
      }
      const s = { ...body, version: crypto.randomUUID().replaceAll("-", "") };
      secrets.set(name, s);
      return Response.json(bundle(name, s));
    }
    const s = secrets.get(name);
    if (!s) return notFound();
    if (req.method === "GET") return Response.json(bundle(name, s));
    if (req.method === "DELETE") {
      secrets.delete(name);
      deleted.set(name, s);
      const { value: _value, ...rest } = bundle(name, s);
      return Response.json({
        ...rest,
        recoveryId: `${origin}/deletedsecrets/${name}`,
        deletedDate: Math.floor(now() / 1000),
        scheduledPurgeDate: Math.floor(now() / 1000) + 90 * 86400,
      });
    }
    return vaultError(405, "BadParameter", "unsupported");
  }

  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const url = new URL(req.url);
    if (url.pathname === "/metadata/identity/oauth2/token") return imds(req, url);
    const grant = /^\/([^/]+)\/oauth2\/v2\.0\/token$/.exec(url.pathname);
    if (grant) return await entra(req, grant[1]);
    const res = await vault(req, url);
    calls.push({ method: req.method, path: url.pathname, status: res.status });
    return res;
  });
  origin = `http://127.0.0.1:${server.addr.port}`;

  return {
    url: origin,
    imdsUrl: `${origin}/metadata/identity/oauth2/token`,
    authorityUrl: origin,
    secrets,
    deleted,
    tokenRequests,
    calls,
    revokeTokens: () => tokens.clear(),
    failWith(f) {
      failure = f;
    },
    close: () => server.shutdown(),
  };
}

/** Runs `fn` against a fresh fake vault, closed afterwards. */
export async function withFakeKeyVault<T>(
  fn: (vault: FakeKeyVault) => Promise<T>,
  opts: FakeKeyVaultOptions = {},
): Promise<T> {
  const vault = startFakeKeyVault(opts);
  try {
    return await fn(vault);
  } finally {
    await vault.close();
  }
}
