/** Where log lines go: stdout in production, an array in tests. */
export type LogSink = (line: string) => void;

export type LogFields = Record<string, unknown>;

/** Field names whose values are credentials, whatever object they sit in. */
const SENSITIVE = /(^|_)(authorization|secret|password|token|cookie|key)$/i;
/** Field names repeat on every line: each is matched once (bounded, in case names are data). */
const verdicts = new Map<string, boolean>();

function sensitive(key: string): boolean {
  let verdict = verdicts.get(key);
  if (verdict === undefined) {
    verdict = SENSITIVE.test(key);
    if (verdicts.size < 4096) verdicts.set(key, verdict);
  }
  return verdict;
}

export function redactFields(fields: LogFields): LogFields {
  const out: LogFields = {};
  for (const [key, value] of Object.entries(fields)) {
    out[key] = sensitive(key) && value != null && typeof value !== "number"
      ? "[redacted]"
      : value !== null && typeof value === "object" && !Array.isArray(value)
      ? redactFields(value as LogFields)
      : value;
  }
  return out;
}

export type LogLevel = "debug" | "info" | "warn" | "error";
const RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** One JSON object per line at or above `level`, with credentials redacted by field name. */
export function createLogger(
  sink: LogSink,
  now: () => number = Date.now,
  level: LogLevel = "info",
) {
  const write = (at: LogLevel, msg: string, fields: LogFields = {}) => {
    if (RANK[at] < RANK[level]) return;
    sink(
      JSON.stringify({
        ts: new Date(now()).toISOString(),
        level: at,
        msg,
        ...redactFields(fields),
      }),
    );
  };
  return {
    debug: (msg: string, fields?: LogFields) => write("debug", msg, fields),
    info: (msg: string, fields?: LogFields) => write("info", msg, fields),
    warn: (msg: string, fields?: LogFields) => write("warn", msg, fields),
    error: (msg: string, fields?: LogFields) => write("error", msg, fields),
  };
}

export type Logger = ReturnType<typeof createLogger>;

/**
 * Stdout for log lines without a synchronous write per request: lines are
 * gathered and written together once per timer tick. Past `maxPending`
 * lines it writes synchronously, so a stalled stdout slows requests rather
 * than growing memory. `flush()` empties it (shutdown).
 */
export function createStdoutSink(maxPending = 10_000): LogSink & { flush(): void } {
  const encoder = new TextEncoder();
  let pending: string[] = [];
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    if (pending.length === 0) return;
    const bytes = encoder.encode(pending.join(""));
    pending = [];
    let written = 0;
    while (written < bytes.length) written += Deno.stdout.writeSync(bytes.subarray(written));
  };
  const sink = (line: string) => {
    pending.push(line + "\n");
    if (pending.length >= maxPending) flush();
    else if (!scheduled) {
      scheduled = true;
      setTimeout(flush, 0);
    }
  };
  return Object.assign(sink, { flush });
}
