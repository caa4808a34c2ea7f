/**
 * Deterministic stand-ins for unit tests: a clock that jumps on sleep, a
 * traffic switch that records what it was told, and gateways whose counters
 * grow with the traffic share they get.
 */
import type { Timer, TrafficSwitch } from "../../src/canary/rollout.ts";
import type { Sample } from "../../src/canary/signals.ts";
import type { Source } from "../../src/canary/sources.ts";

export class FakeTimer implements Timer {
  constructor(public t = 1_700_000_000_000) {}
  now() {
    return this.t;
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    this.t += ms;
    return Promise.resolve();
  }
}

export class FakeSwitch implements TrafficSwitch {
  percent = 0;
  calls: string[] = [];
  fail: Partial<Record<"preflight" | "apply" | "promote" | "rollback", Error>> = {};
  /** Percent whose apply fails. */
  failAt?: number;

  describe() {
    return ["traffic: fake"];
  }
  preflight() {
    this.calls.push("preflight");
    return this.fail.preflight ? Promise.reject(this.fail.preflight) : Promise.resolve();
  }
  apply(percent: number) {
    this.calls.push(`apply ${percent}`);
    if (this.fail.apply && this.failAt === percent) return Promise.reject(this.fail.apply);
    this.percent = percent;
    return Promise.resolve(`set ${percent}%`);
  }
  promote() {
    this.calls.push("promote");
    if (this.fail.promote) return Promise.reject(this.fail.promote);
    this.percent = 100;
    return Promise.resolve("promoted");
  }
  rollback(reason: string) {
    this.calls.push(`rollback: ${reason}`);
    if (this.fail.rollback) return Promise.reject(this.fail.rollback);
    this.percent = 0;
    return Promise.resolve("back to 0%");
  }
}

export interface Behaviour {
  /** Requests per second the whole fleet serves. */
  rps: number;
  /** Share of this gateway's requests that get a 5xx / are slower than the SLO. */
  errorRate?: number | ((now: number) => number);
  slowRate?: number;
  /** This gateway's share of traffic, 0..1, e.g. from the switch's percent. */
  share: () => number;
}

/**
 * A gateway whose cumulative counters grow between reads by the requests it
 * got meanwhile: rps × share × elapsed. Fractions carry over, so totals are exact.
 */
export function simulatedGateway(b: Behaviour): Source & { reads: number; failNext: number } {
  let last: number | undefined;
  const acc = { requests: 0, errors: 0, chat: 0, slow: 0 };
  const source = ((at: number): Promise<Sample> => {
    source.reads++;
    if (source.failNext > 0) {
      source.failNext--;
      return Promise.reject(new Error("connection refused"));
    }
    if (last !== undefined) {
      const n = b.rps * b.share() * ((at - last) / 1000);
      const rate = typeof b.errorRate === "function" ? b.errorRate(at) : b.errorRate ?? 0;
      acc.requests += n;
      acc.errors += n * rate;
      acc.chat += n * (1 - rate);
      acc.slow += n * (1 - rate) * (b.slowRate ?? 0);
    }
    last = at;
    const r = Math.round;
    return Promise.resolve({
      at,
      requests: r(acc.requests),
      errors: r(acc.errors),
      chat: r(acc.chat),
      slow: r(acc.slow),
      slowOverMs: 800,
    });
  }) as Source & { reads: number; failNext: number };
  source.reads = 0;
  source.failNext = 0;
  return source;
}
