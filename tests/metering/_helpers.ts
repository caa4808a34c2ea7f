/** Shared builders for the metering tests: usage events, a captured logger, metric reads. */
import { createLogger } from "../../src/obs/log.ts";
import { createMetrics, type Metrics } from "../../src/obs/metrics.ts";
import type { UsageEvent } from "../../src/metering/usage_event.ts";

let seq = 0;

/** A valid usage event; `over` replaces any field (mode also sets lane unless lane is given). */
export function usageEvent(over: Partial<UsageEvent> = {}): UsageEvent {
  seq++;
  const mode = over.mode ?? "byok";
  const success = over.success ?? true;
  return {
    request_id: `req-${String(seq).padStart(6, "0")}`,
    tenant_id: "tenant-a",
    user_id: "user-a",
    session_id: "sess-1",
    provider: "openai",
    model: "gpt-x",
    input_tokens: 10,
    output_tokens: 20,
    tool_calls_count: 0,
    audio_seconds_in: 0,
    audio_seconds_out: 0,
    latency_ms: 100,
    success,
    error_code: success ? null : "upstream_error",
    mode,
    lane: mode,
    cost_usd: 0.000123,
    occurred_at: "2024-03-10T12:00:00.000Z",
    ...over,
  };
}

/** A logger writing into an array, with helpers to find lines by level and text. */
export function capturedLog() {
  const lines: string[] = [];
  const log = createLogger((line) => lines.push(line));
  const parsed = () =>
    lines.map((l) => JSON.parse(l) as { level: string; msg: string } & Record<string, unknown>);
  return {
    log,
    lines,
    parsed,
    find: (level: string, text: string) =>
      parsed().filter((l) => l.level === level && l.msg.includes(text)),
  };
}

export { createMetrics };
export type { Metrics };

/** The sum of a metric's samples whose labels include `labels`. */
export async function metricValue(
  metrics: Metrics,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const metric = metrics.registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name}`);
  const data = await metric.get();
  return data.values
    .filter((v) =>
      Object.entries(labels).every(([k, val]) => (v.labels as Record<string, unknown>)[k] === val)
    )
    .reduce((sum, v) => sum + v.value, 0);
}

/** Polls `cond` every few ms until true; throws after `tries` polls (a hang guard, not a timing check). */
export async function waitFor(
  cond: () => boolean | Promise<boolean>,
  what: string,
  tries = 2000,
): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Micro-dollars as numeric(18,6) text, e.g. 3 → "0.000003". */
export const usdText = (micros: number) =>
  `${Math.trunc(micros / 1e6)}.${String(micros % 1e6).padStart(6, "0")}`;

/** A value in micro-dollars, exactly (cost_usd has at most 6 decimals). */
export const micros = (usd: number) => Math.round(usd * 1e6);
