import type { Clock } from "../clock.ts";

/**
 * Revoked token ids, each kept only until its token would have expired anyway,
 * so the list stays as small as the set of live revoked tokens.
 */
export class RevocationList {
  #revoked = new Map<string, number>();

  /** `graceMs` is how long verification still accepts a token past `exp` (its clock skew). */
  constructor(private readonly clock: Clock, private readonly graceMs = 0) {}

  revoke(jti: string, expiresAtMs: number): void {
    const now = this.clock.now();
    for (const [id, exp] of this.#revoked) if (exp <= now) this.#revoked.delete(id);
    this.#revoked.set(jti, expiresAtMs + this.graceMs);
  }

  isRevoked(jti: string): boolean {
    const exp = this.#revoked.get(jti);
    return exp !== undefined && exp > this.clock.now();
  }
}
