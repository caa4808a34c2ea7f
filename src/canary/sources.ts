/**
 * Where a rollout reads a gateway's counters: `GET /admin/slo` (admin token;
 * the gateway's own SLO engine) or `GET /metrics` (Prometheus text, no token).
 * Either gives cumulative counts; signals.ts turns them into windows.
 */
import { countAbove, type Sample } from "./signals.ts";

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

/** Reads one gateway's (or several gateways') counters now; throws when it cannot. */
export type Source = (at: number) => Promise<Sample>;

export class SourceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SourceError";
  }
}

async function get(
  fetch: FetchLike,
  url: string,
  headers: Record<string, string>,
  timeoutMs: number,
): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(url, { headers, signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    throw new SourceError(`GET ${url}: ${(err as Error).message}`);
  }
  if (!res.ok) {
    const text = (await res.text()).slice(0, 300);
    throw new SourceError(`GET ${url}: HTTP ${res.status} ${text}`);
  }
  return res;
}

interface SloWindow {
  total: number;
  bad: number;
}
interface SloReport {
  targets: { latency_ms: number; window_days: number };
  slos: Array<{ name: string; windows: Record<string, SloWindow> }>;
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isFinite(v) && v >= 0;
}

/**
 * The SLO engine's widest window (the whole SLO window, 30 days by default)
 * acts as a cumulative counter: it only grows while the process runs, unless
 * minutes older than that window fall out, which a rollout never spans.
 */
export function sampleFromSlo(body: unknown, at: number): Sample {
  const r = body as SloReport;
  const days = r?.targets?.window_days;
  const latencyMs = r?.targets?.latency_ms;
  if (!isCount(days) || !isCount(latencyMs) || !Array.isArray(r.slos)) {
    throw new SourceError("/admin/slo answered without targets and slos");
  }
  const whole = (name: string): SloWindow => {
    const w = r.slos.find((s) => s?.name === name)?.windows?.[`${days}d`];
    if (!w || !isCount(w.total) || !isCount(w.bad)) {
      throw new SourceError(`/admin/slo has no ${days}d window for the ${name} SLO`);
    }
    return w;
  };
  const availability = whole("availability");
  const latency = whole("latency");
  return {
    at,
    requests: availability.total,
    errors: availability.bad,
    chat: latency.total,
    slow: latency.bad,
    slowOverMs: latencyMs,
  };
}

/** `GET <base>/admin/slo` with an admin token. */
export function sloSource(
  base: string,
  token: string,
  fetch: FetchLike = globalThis.fetch,
  timeoutMs = 5_000,
): Source {
  const url = `${base.replace(/\/$/, "")}/admin/slo`;
  return async (at) => {
    const res = await get(fetch, url, { authorization: `Bearer ${token}` }, timeoutMs);
    let body: unknown;
    try {
      body = await res.json();
    } catch {
      throw new SourceError(`GET ${url}: not JSON`);
    }
    return sampleFromSlo(body, at);
  };
}

/** One Prometheus text sample: `name{a="b",…} value`. */
export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const LINE = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g;

/** Parses the Prometheus text format's samples (comments and blank lines skipped). */
export function parsePrometheus(text: string): PromSample[] {
  const out: PromSample[] = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? "").matchAll(LABEL)) {
      labels[k] = v.replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    }
    const value = m[3] === "+Inf" ? Infinity : m[3] === "-Inf" ? -Infinity : Number(m[3]);
    out.push({ name: m[1], labels, value });
  }
  return out;
}

/**
 * The same counters from `/metrics`, chosen as the runbooks' recording rules
 * choose them (infra/prometheus/recording_rules.yml): requests on `/v1/`
 * routes and their 5xx; the latency histogram of non-streamed `/v1/chat…`.
 */
export function sampleFromMetrics(text: string, at: number, sloMs: number): Sample {
  let requests = 0;
  let errors = 0;
  let seen = false;
  const buckets = new Map<number, number>();
  for (const s of parsePrometheus(text)) {
    if (s.name === "convergio_http_requests_total") {
      seen = true;
      if (!s.labels.route?.startsWith("/v1/")) continue;
      requests += s.value;
      if (s.labels.status_class === "5xx") errors += s.value;
    } else if (
      s.name === "convergio_http_request_duration_seconds_bucket" &&
      s.labels.streaming === "false" && s.labels.route?.startsWith("/v1/chat")
    ) {
      const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le) * 1000;
      buckets.set(le, (buckets.get(le) ?? 0) + s.value);
    }
  }
  if (!seen) throw new SourceError("/metrics has no convergio_http_requests_total");
  const sorted = [...buckets].sort((a, b) => a[0] - b[0]);
  if (!sorted.length || sorted.at(-1)![0] !== Infinity) sorted.push([Infinity, 0]);
  const chat = sorted.at(-1)![1];
  // The gateway's buckets have a bound at the 800 ms SLO; another SLO is interpolated.
  const slow = countAbove(sorted, sloMs);
  return { at, requests, errors, chat, slow, slowOverMs: sloMs, buckets: sorted };
}

/** `GET <base>/metrics`: no token, but the latency SLO comes from the caller. */
export function metricsSource(
  base: string,
  sloMs: number,
  fetch: FetchLike = globalThis.fetch,
  timeoutMs = 5_000,
): Source {
  const url = `${base.replace(/\/$/, "")}/metrics`;
  return async (at) => {
    const res = await get(fetch, url, {}, timeoutMs);
    return sampleFromMetrics(await res.text(), at, sloMs);
  };
}

/**
 * Several gateways as one: counters summed, so a fleet of edges is judged
 * together. One unreachable gateway fails the whole sample: a partial sum
 * would look like a counter reset.
 */
export function combine(sources: Source[]): Source {
  if (sources.length === 1) return sources[0];
  return async (at) => {
    const samples = await Promise.all(sources.map((s) => s(at)));
    const sum = (k: "requests" | "errors" | "chat" | "slow") =>
      samples.reduce((n, s) => n + s[k], 0);
    const withBuckets = samples.every((s) => s.buckets);
    let buckets: Array<[number, number]> | undefined;
    if (withBuckets) {
      const merged = new Map<number, number>();
      for (const s of samples) {
        for (const [le, n] of s.buckets!) merged.set(le, (merged.get(le) ?? 0) + n);
      }
      buckets = [...merged].sort((a, b) => a[0] - b[0]);
    }
    return {
      at,
      requests: sum("requests"),
      errors: sum("errors"),
      chat: sum("chat"),
      slow: sum("slow"),
      slowOverMs: samples[0].slowOverMs,
      ...(buckets ? { buckets } : {}),
    };
  };
}
