import type { Counter } from "prom-client";
import type { MitigationName, MitigationState } from "../../src/control/mitigations.ts";
import type { ControlSnapshot, TenantSettings } from "../../src/control/snapshot.ts";
import { createLogger } from "../../src/obs/log.ts";
import { createMetrics } from "../../src/obs/metrics.ts";

/** A clock the test moves by hand. */
export function manualClock(start = Date.UTC(2026, 4, 1, 12)) {
  const clock = {
    t: start,
    now: () => clock.t,
    advance(ms: number) {
      clock.t += ms;
    },
  };
  return clock;
}

/** A logger writing into `lines`, and a fresh metrics registry. */
export function observed(now: () => number = Date.now) {
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger((l) => lines.push(JSON.parse(l)), now);
  return { lines, log, metrics: createMetrics({ now }) };
}

/** The messages logged at a level. */
export const messages = (lines: Array<Record<string, unknown>>, level: string) =>
  lines.filter((l) => l.level === level).map((l) => l.msg);

/** The value of one labelled series of a counter (0 when it was never incremented). */
export async function counted<L extends string>(
  counter: Counter<L>,
  labels: Partial<Record<L, string>>,
): Promise<number> {
  const { values } = await counter.get();
  const has = (got: Record<string, unknown>) =>
    Object.entries(labels).every(([k, want]) => got[k] === want);
  return values.filter((v) => has(v.labels)).reduce((n, v) => n + v.value, 0);
}

/** A tenant as the admin API stores it; `created_at` defaults to a fixed instant. */
export function tenantSettings(
  over: Partial<TenantSettings & { created_at: string }> = {},
): ControlSnapshot["tenants"][string] {
  return {
    type: "business",
    plan: null,
    limits: {},
    downgrade_model: null,
    retention_months: null,
    tools: null,
    created_at: "2026-01-01T00:00:00.000Z",
    ...over,
  };
}

/** An active mitigation; operator-applied (no sources) unless `sources` says otherwise. */
export function mitigationState(over: Partial<MitigationState> = {}): MitigationState {
  return {
    params: {},
    actor: "ops@example.com",
    reason: "incident",
    sources: [],
    since: "2026-01-01T00:00:00.000Z",
    ...over,
  };
}

/** The snapshot's mitigations with one more (or, with `undefined`, one fewer). */
export function withMitigation(
  s: ControlSnapshot,
  name: MitigationName,
  state: MitigationState | undefined,
): ControlSnapshot {
  const { [name]: _old, ...rest } = s.mitigations;
  return {
    ...s,
    version: `${s.version}+`,
    mitigations: state ? { ...rest, [name]: state } : rest,
  };
}
