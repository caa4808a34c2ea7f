import { encodeHex } from "./hex.ts";
import type { Sql } from "../db/client.ts";
import type { Principal } from "./principal.ts";

export async function hashApiKey(key: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(key));
  return `sha256:${encodeHex(new Uint8Array(digest))}`;
}

/** A new random API key; only its hash is ever stored. */
export function generateApiKey(): string {
  return `cvg_${encodeHex(crypto.getRandomValues(new Uint8Array(24)))}`;
}

export interface ApiKeyRecord {
  id: string;
  tenant_id: string;
  user_id: string;
  roles: Principal["roles"];
  mode: Principal["mode"];
}

/** API keys in the ledger database, looked up by hash: the plaintext is never kept. */
export function createApiKeyStore(sql: Sql) {
  return {
    async find(key: string): Promise<ApiKeyRecord | undefined> {
      const [row] = await sql<ApiKeyRecord[]>`
        SELECT id, tenant_id, user_id, roles, mode FROM api_keys
        WHERE hash = ${await hashApiKey(key)} AND revoked_at IS NULL`;
      return row;
    },
    /** Creates a key and returns its plaintext, which is shown once. */
    async create(owner: Omit<ApiKeyRecord, "id">): Promise<{ id: string; key: string }> {
      const key = generateApiKey();
      const id = `key_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
      await sql`
        INSERT INTO api_keys (id, hash, tenant_id, user_id, roles, mode)
        VALUES (${id}, ${await hashApiKey(key)}, ${owner.tenant_id}, ${owner.user_id},
          ${owner.roles}, ${owner.mode})`;
      return { id, key };
    },
  };
}

export type ApiKeyStore = ReturnType<typeof createApiKeyStore>;
