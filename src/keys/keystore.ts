import { fnv1a } from "../hash.ts";
import type { Envelope } from "./envelope.ts";

/**
 * Where tenants' provider keys live. The admin API stores a key and keeps only
 * its reference (`key_ref`); an edge loads the key by reference when the
 * control snapshot names it. A local store hands back an envelope to keep
 * with the reference; a vault keeps the secret itself.
 */
export interface KeyStore {
  readonly kind: "local" | "azure_key_vault";
  store(ref: string, secret: string): Promise<Envelope | null>;
  load(ref: string, envelope: Envelope | null): Promise<string>;
  remove(ref: string): Promise<void>;
  /** The envelope re-wrapped under the current master key (a vault rotates by itself). */
  rewrap(ref: string, envelope: Envelope | null): Promise<Envelope | null>;
}

/** A stable, vault-safe reference for one tenant's key to one provider. */
export function keyRef(tenant: string, provider: string): string {
  const safe = (s: string) =>
    s.replace(/[^0-9A-Za-z]/g, (c) => `-${c.charCodeAt(0).toString(16)}-`);
  const ref = `byok-${safe(tenant)}--${safe(provider)}`;
  if (ref.length <= MAX_NAME) return ref;
  // Key Vault names stop at 127 characters: a long one keeps a readable head and a hash of the rest.
  return `${ref.slice(0, MAX_NAME - 9)}-${fnv1a(ref).toString(16).padStart(8, "0")}`;
}

const MAX_NAME = 127;
