import type { Clock } from "../clock.ts";

export type BreakerState = "closed" | "open" | "half-open";

export interface BreakerOptions {
  failure_threshold: number;
  cooldown_ms: number;
}

/**
 * Per-deployment circuit breaker. Closed counts consecutive failures; open
 * refuses calls until the cooldown passes; half-open lets exactly one probe
 * through, whose outcome closes or reopens the circuit.
 */
export class CircuitBreaker {
  #failures = 0;
  #openedAt = 0;
  #state: BreakerState = "closed";
  #probing = false;

  constructor(private readonly opts: BreakerOptions, private readonly clock: Clock) {}

  get state(): BreakerState {
    if (this.#state === "open" && this.clock.now() - this.#openedAt >= this.opts.cooldown_ms) {
      this.#state = "half-open";
      this.#probing = false;
    }
    return this.#state;
  }

  /** Asks to make a call; in half-open state only the first asker gets through. */
  tryAcquire(): boolean {
    const state = this.state;
    if (state === "closed") return true;
    if (state === "open" || this.#probing) return false;
    this.#probing = true;
    return true;
  }

  onSuccess(): void {
    this.#failures = 0;
    this.#state = "closed";
    this.#probing = false;
  }

  onFailure(): void {
    this.#failures++;
    this.#probing = false;
    if (this.#state === "half-open" || this.#failures >= this.opts.failure_threshold) {
      this.#state = "open";
      this.#openedAt = this.clock.now();
    }
  }
}
