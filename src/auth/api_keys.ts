import { encodeHex, sha256Hex } from "./hex.ts";
import type { Sql } from "../db/client.ts";
import type { Principal } from "./principal.ts";

export async function hashApiKey(key: string): Promise<string> {
  return `sha256:${await sha256Hex(key)}`;
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
    /** The live key with this plaintext; its last use is recorded for access reviews. */
    async find(key: string): Promise<ApiKeyRecord | undefined> {
      const [row] = await sql<ApiKeyRecord[]>`
        UPDATE api_keys SET last_used_at = now()
        WHERE hash = ${await hashApiKey(key)} AND revoked_at IS NULL
        RETURNING id, tenant_id, user_id, roles, mode`;
      return row;
    },
    /** Creates a key and returns its plaintext, which is shown once. */
    create: (owner: Omit<ApiKeyRecord, "id">, tx: Sql = sql) => insertKey(tx, owner),
    async list(tenant: string | undefined, tx: Sql = sql): Promise<ApiKeyView[]> {
      return [
        ...await tx<ApiKeyView[]>`
          SELECT id, tenant_id, user_id, roles, mode, created_at, last_used_at, revoked_at
          FROM api_keys WHERE ${tenant ?? null}::text IS NULL OR tenant_id = ${tenant ?? null}
          ORDER BY created_at, id`,
      ];
    },
    async get(id: string, tx: Sql = sql): Promise<ApiKeyView | undefined> {
      const [row] = await tx<ApiKeyView[]>`
        SELECT id, tenant_id, user_id, roles, mode, created_at, last_used_at, revoked_at
        FROM api_keys WHERE id = ${id} FOR UPDATE`;
      return row;
    },
    async revoke(id: string, tx: Sql = sql): Promise<void> {
      await tx`UPDATE api_keys SET revoked_at = now() WHERE id = ${id} AND revoked_at IS NULL`;
    },
  };
}

async function insertKey(
  tx: Sql,
  owner: Omit<ApiKeyRecord, "id">,
): Promise<{ id: string; key: string }> {
  const key = generateApiKey();
  const id = `key_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  await tx`
    INSERT INTO api_keys (id, hash, tenant_id, user_id, roles, mode)
    VALUES (${id}, ${await hashApiKey(key)}, ${owner.tenant_id}, ${owner.user_id},
      ${owner.roles}, ${owner.mode})`;
  return { id, key };
}

/** A key as the admin API shows it: never its hash. */
export interface ApiKeyView extends ApiKeyRecord {
  created_at: Date;
  last_used_at: Date | null;
  revoked_at: Date | null;
}

export type ApiKeyStore = ReturnType<typeof createApiKeyStore>;
