import { type ControlSnapshot, emptySnapshot } from "../../src/control/snapshot.ts";

/** A fixed control snapshot for edge tests that run without an aggregator. */
export function snapshot(parts: Partial<ControlSnapshot>): ControlSnapshot {
  return { ...emptySnapshot(), version: "test", ...parts };
}
