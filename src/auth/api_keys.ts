import { encodeHex } from "./hex.ts";
import type { Config } from "../config.ts";

export type ApiKeyRecord = Config["auth"]["api_keys"][number];

export async function hashApiKey(key: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(key));
  return `sha256:${encodeHex(new Uint8Array(digest))}`;
}

/** A new random API key; only its hash is ever stored. */
export function generateApiKey(): string {
  return `cvg_${encodeHex(crypto.getRandomValues(new Uint8Array(24)))}`;
}

/** Looks API keys up by hash, so the plaintext key is never kept or compared. */
export function createApiKeyIndex(records: ApiKeyRecord[]) {
  const byHash = new Map(records.map((r) => [r.hash, r]));
  return {
    async find(key: string): Promise<ApiKeyRecord | undefined> {
      return byHash.get(await hashApiKey(key));
    },
  };
}

export type ApiKeyIndex = ReturnType<typeof createApiKeyIndex>;
