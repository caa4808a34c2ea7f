import type { Clock } from "../clock.ts";

/**
 * Revoked token ids, each kept only until its token would have expired anyway,
 * so the list stays as small as the set of live revoked tokens.
 */
export class RevocationList {
  #revoked = new Map<string, number>();

  constructor(private readonly clock: Clock) {}

  revoke(jti: string, expiresAtMs: number): void {
    const now = this.clock.now();
    for (const [id, exp] of this.#revoked) if (exp <= now) this.#revoked.delete(id);
    this.#revoked.set(jti, expiresAtMs);
  }

  isRevoked(jti: string): boolean {
    const exp = this.#revoked.get(jti);
    return exp !== undefined && exp > this.clock.now();
  }
}
