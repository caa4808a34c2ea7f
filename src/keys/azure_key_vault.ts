import type { Config } from "../config.ts";
import type { KeyStore } from "./keystore.ts";

type AzureConfig = NonNullable<Config["byok"]["azure"]>;

const SCOPE = "https://vault.azure.net";

/** An Entra ID token for Key Vault, from the managed identity or client credentials, cached. */
function tokenSource(cfg: AzureConfig, doFetch: typeof fetch, now: () => number) {
  let cached: { token: string; until: number } | undefined;
  async function fetchToken(): Promise<{ token: string; expiresInS: number }> {
    let res: Response;
    if (cfg.auth === "managed_identity") {
      const url = new URL(cfg.imds_url);
      url.searchParams.set("api-version", "2018-02-01");
      url.searchParams.set("resource", SCOPE);
      if (cfg.client_id) url.searchParams.set("client_id", cfg.client_id);
      res = await doFetch(url, { headers: { Metadata: "true" } });
    } else {
      res = await doFetch(
        `${cfg.authority_url.replace(/\/+$/, "")}/${cfg.tenant_id}/oauth2/v2.0/token`,
        {
          method: "POST",
          headers: { "content-type": "application/x-www-form-urlencoded" },
          body: new URLSearchParams({
            grant_type: "client_credentials",
            client_id: cfg.client_id!,
            client_secret: cfg.client_secret!.reveal(),
            scope: `${SCOPE}/.default`,
          }),
        },
      );
    }
    if (!res.ok) throw new Error(`token endpoint answered ${res.status}`);
    const body = await res.json() as {
      access_token: string;
      expires_in?: string | number;
      expires_on?: string | number;
    };
    const expiresInS = body.expires_in !== undefined
      ? Number(body.expires_in)
      : Number(body.expires_on) - now() / 1000;
    return { token: body.access_token, expiresInS };
  }
  return async () => {
    if (cached && cached.until > now()) return cached.token;
    const t = await fetchToken();
    // Renewed a minute early, so a request never goes out with a token about to lapse.
    cached = { token: t.token, until: now() + (t.expiresInS - 60) * 1000 };
    return t.token;
  };
}

/** Tenant keys as Key Vault secrets, over the vault's REST API (secrets, api-version 7.4). */
export function createAzureKeyVaultStore(
  cfg: AzureConfig,
  opts: { fetch?: typeof fetch; now?: () => number } = {},
): KeyStore {
  const doFetch = opts.fetch ?? fetch;
  const token = tokenSource(cfg, doFetch, opts.now ?? Date.now);
  const base = cfg.vault_url.replace(/\/+$/, "");
  const url = (path: string) => `${base}${path}?api-version=${encodeURIComponent(cfg.api_version)}`;

  async function call(method: string, path: string, body?: unknown): Promise<Response> {
    const res = await doFetch(url(path), {
      method,
      headers: {
        authorization: `Bearer ${await token()}`,
        ...(body ? { "content-type": "application/json" } : {}),
      },
      body: body ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(10_000),
    });
    return res;
  }

  const failed = async (what: string, res: Response) => {
    const detail = await res.text().catch(() => "");
    return new Error(`key vault ${what} answered ${res.status}: ${detail.slice(0, 200)}`);
  };

  return {
    kind: "azure_key_vault",
    async store(ref, secret) {
      const res = await call("PUT", `/secrets/${ref}`, {
        value: secret,
        contentType: "application/x-provider-api-key",
        tags: { owner: "convergio-gateway" },
      });
      if (!res.ok) throw await failed("set", res);
      await res.body?.cancel();
      return null;
    },
    async load(ref) {
      const res = await call("GET", `/secrets/${ref}`);
      if (!res.ok) throw await failed("get", res);
      return ((await res.json()) as { value: string }).value;
    },
    async remove(ref) {
      const res = await call("DELETE", `/secrets/${ref}`);
      if (!res.ok && res.status !== 404) throw await failed("delete", res);
      await res.body?.cancel();
      // Soft delete keeps the name taken; purging frees it for the tenant's next key.
      const purge = await call("DELETE", `/deletedsecrets/${ref}`);
      await purge.body?.cancel();
    },
    rewrap: () => Promise.resolve(null),
  };
}
