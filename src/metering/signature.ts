import { encodeHex } from "../auth/hex.ts";

/** How far a signed request's timestamp may be from now, against replays. */
const TOLERANCE_S = 300;

const enc = new TextEncoder();

function importKey(secret: string): Promise<CryptoKey> {
  return crypto.subtle.importKey(
    "raw",
    enc.encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    [
      "sign",
      "verify",
    ],
  );
}

/**
 * Edge-to-aggregator signature: HMAC-SHA256 over `<unix seconds>.<body>` with
 * the shared service secret, sent as `x-convergio-signature: t=<ts>,v1=<hex>`.
 */
export async function signBody(secret: string, body: string, nowMs: number): Promise<string> {
  const t = Math.floor(nowMs / 1000);
  const mac = await crypto.subtle.sign("HMAC", await importKey(secret), enc.encode(`${t}.${body}`));
  return `t=${t},v1=${encodeHex(new Uint8Array(mac))}`;
}

function decodeHex(hex: string): Uint8Array<ArrayBuffer> | null {
  if (!/^(?:[0-9a-f]{2})+$/.test(hex)) return null;
  return new Uint8Array(hex.match(/../g)!.map((b) => parseInt(b, 16)));
}

/** Checks a signature header in constant time; false for anything missing, stale or wrong. */
export async function verifyBody(
  secret: string,
  body: string,
  header: string | undefined,
  nowMs: number,
): Promise<boolean> {
  const match = /^t=(\d+),v1=([0-9a-f]+)$/.exec(header ?? "");
  if (!match) return false;
  const t = Number(match[1]);
  if (Math.abs(nowMs / 1000 - t) > TOLERANCE_S) return false;
  const mac = decodeHex(match[2]);
  if (!mac) return false;
  return crypto.subtle.verify("HMAC", await importKey(secret), mac, enc.encode(`${t}.${body}`));
}
