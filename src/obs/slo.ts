import { Gauge, type Registry } from "prom-client";

export interface SloTargets {
  /** Share of API requests that must not fail with a 5xx. */
  availability: number;
  /** Share of non-streamed chat requests that must finish within `latency_ms`. */
  latency: number;
  latency_ms: number;
  /** Share of streams whose first token must arrive within `ttft_ms`. */
  ttft: number;
  ttft_ms: number;
  window_days: number;
  /** The error-budget alert: this share of the whole window's budget burnt within one day. */
  budget_alert_per_day: number;
  /** Below this many events in a day the alert stays quiet: too little data to judge. */
  alert_min_events: number;
}

export interface RequestOutcome {
  status: number;
  latency_ms: number;
  /** Counts toward availability (API traffic, not health checks or scrapes). */
  api: boolean;
  /** A chat request; its latency counts when not streamed. */
  chat: boolean;
  streaming: boolean;
  ttft_ms?: number;
}

const MINUTE = 60_000;
const WINDOWS = { "5m": 5, "1h": 60, "1d": 1440 } as const;
type SloName = "availability" | "latency" | "ttft";
const NAMES: SloName[] = ["availability", "latency", "ttft"];

/**
 * SLIs over in-process sliding windows: one slot per minute for the whole
 * SLO window (30 days by default, about 1.3 MB), each counting total and bad
 * events per SLO. From them: the SLIs per window, the error budget left over
 * the SLO window, burn rates, and the 25%-in-a-day budget alert.
 */
export class SloEngine {
  readonly #slots: number;
  readonly #minute: Float64Array;
  readonly #total: Record<SloName, Int32Array>;
  readonly #bad: Record<SloName, Int32Array>;

  constructor(readonly targets: SloTargets, private readonly now: () => number) {
    this.#slots = targets.window_days * 1440;
    this.#minute = new Float64Array(this.#slots).fill(-1);
    const arrays = () => ({
      availability: new Int32Array(this.#slots),
      latency: new Int32Array(this.#slots),
      ttft: new Int32Array(this.#slots),
    });
    this.#total = arrays();
    this.#bad = arrays();
  }

  #slot(minute: number): number {
    const i = minute % this.#slots;
    if (this.#minute[i] !== minute) {
      this.#minute[i] = minute;
      for (const n of NAMES) {
        this.#total[n][i] = 0;
        this.#bad[n][i] = 0;
      }
    }
    return i;
  }

  record(o: RequestOutcome): void {
    const i = this.#slot(Math.floor(this.now() / MINUTE));
    const t = this.targets;
    if (o.api) {
      this.#total.availability[i]++;
      if (o.status >= 500) this.#bad.availability[i]++;
    }
    if (o.chat && !o.streaming && o.status < 500) {
      this.#total.latency[i]++;
      if (o.latency_ms > t.latency_ms) this.#bad.latency[i]++;
    }
    if (o.ttft_ms !== undefined) {
      this.#total.ttft[i]++;
      if (o.ttft_ms > t.ttft_ms) this.#bad.ttft[i]++;
    }
  }

  #sum(name: SloName, minutes: number): { total: number; bad: number } {
    const nowMinute = Math.floor(this.now() / MINUTE);
    let total = 0;
    let bad = 0;
    for (let m = nowMinute - Math.min(minutes, this.#slots) + 1; m <= nowMinute; m++) {
      const i = ((m % this.#slots) + this.#slots) % this.#slots;
      if (this.#minute[i] !== m) continue;
      total += this.#total[name][i];
      bad += this.#bad[name][i];
    }
    return { total, bad };
  }

  report() {
    const t = this.targets;
    const goals: Record<SloName, { target: number; objective: string }> = {
      availability: { target: t.availability, objective: "API requests without a 5xx" },
      latency: {
        target: t.latency,
        objective: `non-streamed chat requests within ${t.latency_ms} ms (P${t.latency * 100})`,
      },
      ttft: {
        target: t.ttft,
        objective: `streams with a first token within ${t.ttft_ms} ms (P${t.ttft * 100})`,
      },
    };
    const windowMinutes = t.window_days * 1440;
    return NAMES.map((name) => {
      const { target, objective } = goals[name];
      const allowed = 1 - target;
      const windows: Record<
        string,
        { total: number; bad: number; sli: number | null; burn_rate: number | null }
      > = {};
      for (
        const [label, minutes] of [...Object.entries(WINDOWS), [
          `${t.window_days}d`,
          windowMinutes,
        ]] as const
      ) {
        const { total, bad } = this.#sum(name, minutes);
        windows[label] = {
          total,
          bad,
          sli: total ? 1 - bad / total : null,
          burn_rate: total ? bad / total / allowed : null,
        };
      }
      const whole = windows[`${t.window_days}d`];
      const day = windows["1d"];
      const budget = allowed * whole.total;
      const consumedToday = budget > 0 ? day.bad / budget : 0;
      const firing = day.total >= t.alert_min_events && consumedToday >= t.budget_alert_per_day;
      return {
        name,
        objective,
        target,
        windows,
        error_budget: {
          allowed_bad_events: budget,
          bad_events: whole.bad,
          remaining: budget > 0 ? Math.max(0, 1 - whole.bad / budget) : whole.bad > 0 ? 0 : 1,
          consumed_last_day: consumedToday,
        },
        alert: {
          firing,
          rule: `${
            t.budget_alert_per_day * 100
          }% of the ${t.window_days}-day error budget consumed within one day`,
        },
      };
    });
  }

  /** Exports the SLIs, budget and burn rates as gauges, computed at scrape time. */
  register(registry: Registry): void {
    const collect = (set: (r: ReturnType<SloEngine["report"]>[number]) => void) => () => {
      for (const r of this.report()) set(r);
    };
    const sli = new Gauge({
      name: "convergio_slo_sli_ratio",
      help: "Service level indicator: good events / all events, per SLO and window.",
      labelNames: ["slo", "window"] as const,
      registers: [registry],
      collect: collect((r) => {
        for (const [w, v] of Object.entries(r.windows)) {
          if (v.sli !== null) sli.set({ slo: r.name, window: w }, v.sli);
        }
      }),
    });
    const burn = new Gauge({
      name: "convergio_slo_burn_rate",
      help: "Error-budget burn rate per SLO and window (1 = on pace to spend it exactly).",
      labelNames: ["slo", "window"] as const,
      registers: [registry],
      collect: collect((r) => {
        for (const [w, v] of Object.entries(r.windows)) {
          if (v.burn_rate !== null) burn.set({ slo: r.name, window: w }, v.burn_rate);
        }
      }),
    });
    const remaining = new Gauge({
      name: "convergio_slo_error_budget_remaining_ratio",
      help: "Share of the SLO window's error budget not yet consumed.",
      labelNames: ["slo"] as const,
      registers: [registry],
      collect: collect((r) => remaining.set({ slo: r.name }, r.error_budget.remaining)),
    });
    const firing = new Gauge({
      name: "convergio_slo_budget_alert_firing",
      help: "1 while 25% (configurable) of the error budget has been consumed within one day.",
      labelNames: ["slo"] as const,
      registers: [registry],
      collect: collect((r) => firing.set({ slo: r.name }, r.alert.firing ? 1 : 0)),
    });
  }
}
