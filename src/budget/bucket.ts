/** Token-bucket arithmetic: capacity `cap` per minute, refilled continuously. */

export const MINUTE_MS = 60_000;

export function refill(
  stored: number | undefined,
  ts: number | undefined,
  cap: number,
  now: number,
) {
  if (stored === undefined || ts === undefined) return cap;
  return Math.min(cap, stored + Math.max(0, now - ts) * cap / MINUTE_MS);
}

/** Milliseconds until `tokens` grows to `want`. */
export function waitMs(tokens: number, want: number, cap: number): number {
  return tokens >= want ? 0 : Math.ceil((want - tokens) * MINUTE_MS / cap);
}
