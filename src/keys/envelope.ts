import { base64url } from "jose";
import { z } from "zod";

/**
 * A secret sealed twice: a fresh data key (AES-256-GCM) encrypts the secret,
 * and a versioned master key wraps the data key. Rotating the master key
 * re-wraps data keys only; the sealed secrets never change.
 */
export const EnvelopeSchema = z.strictObject({
  ciphertext: z.string(),
  iv: z.string(),
  wrapped_key: z.string(),
  wrap_iv: z.string(),
  master_version: z.number().int().positive(),
});
export type Envelope = z.infer<typeof EnvelopeSchema>;

export class MasterKeys {
  private constructor(
    private readonly keys: Map<number, CryptoKey>,
    readonly current: number,
  ) {}

  /**
   * From `v1:<base64url 32 bytes>,v2:<…>`; the highest version wraps new keys,
   * the older ones stay to open what they wrapped until a rotation re-wraps it.
   */
  static async parse(spec: string): Promise<MasterKeys> {
    const keys = new Map<number, CryptoKey>();
    for (const part of spec.split(",").map((p) => p.trim()).filter(Boolean)) {
      const m = /^v([1-9]\d*):([A-Za-z0-9_-]+={0,2})$/.exec(part);
      if (!m) throw new Error("master keys look like v1:<base64url>,v2:<base64url>");
      if (keys.has(Number(m[1]))) throw new Error(`master key v${m[1]} is given twice`);
      let raw: Uint8Array<ArrayBuffer>;
      try {
        raw = new Uint8Array(base64url.decode(m[2].replace(/=+$/, "")));
      } catch {
        throw new Error(`master key v${m[1]} is not base64url`);
      }
      if (raw.length !== 32) throw new Error(`master key v${m[1]} must be 32 bytes`);
      keys.set(
        Number(m[1]),
        await crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]),
      );
    }
    if (!keys.size) throw new Error("no master key given");
    return new MasterKeys(keys, Math.max(...keys.keys()));
  }

  key(version: number): CryptoKey {
    const k = this.keys.get(version);
    if (!k) throw new Error(`master key v${version} is not loaded`);
    return k;
  }
}

const enc = new TextEncoder();
const b64 = (b: ArrayBuffer | Uint8Array) => base64url.encode(new Uint8Array(b));
const unb64 = (s: string) => new Uint8Array(base64url.decode(s));
const iv = () => crypto.getRandomValues(new Uint8Array(12));

/** `aad` binds the envelope to its reference: one cannot be swapped in for another. */
export async function seal(master: MasterKeys, secret: string, aad: string): Promise<Envelope> {
  const dataKey = crypto.getRandomValues(new Uint8Array(32));
  const dek = await crypto.subtle.importKey("raw", dataKey, "AES-GCM", false, ["encrypt"]);
  const dataIv = iv();
  const ciphertext = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: dataIv, additionalData: enc.encode(aad) },
    dek,
    enc.encode(secret),
  );
  return { ciphertext: b64(ciphertext), iv: b64(dataIv), ...await wrap(master, dataKey, aad) };
}

async function wrap(master: MasterKeys, dataKey: Uint8Array<ArrayBuffer>, aad: string) {
  const wrapIv = iv();
  const wrapped = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: wrapIv, additionalData: enc.encode(`wrap:${aad}`) },
    master.key(master.current),
    dataKey,
  );
  return { wrapped_key: b64(wrapped), wrap_iv: b64(wrapIv), master_version: master.current };
}

async function unwrap(master: MasterKeys, e: Envelope, aad: string) {
  return new Uint8Array(
    await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: unb64(e.wrap_iv), additionalData: enc.encode(`wrap:${aad}`) },
      master.key(e.master_version),
      unb64(e.wrapped_key),
    ),
  );
}

/** Throws when the envelope was tampered with, or its master key is not loaded. */
export async function open(master: MasterKeys, e: Envelope, aad: string): Promise<string> {
  const dek = await crypto.subtle.importKey(
    "raw",
    await unwrap(master, e, aad),
    "AES-GCM",
    false,
    ["decrypt"],
  );
  const plain = await crypto.subtle.decrypt(
    { name: "AES-GCM", iv: unb64(e.iv), additionalData: enc.encode(aad) },
    dek,
    unb64(e.ciphertext),
  );
  return new TextDecoder().decode(plain);
}

/** The same envelope with its data key wrapped by the current master key. */
export async function rewrap(master: MasterKeys, e: Envelope, aad: string): Promise<Envelope> {
  if (e.master_version === master.current) return e;
  return { ...e, ...await wrap(master, await unwrap(master, e, aad), aad) };
}
