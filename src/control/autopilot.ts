import type { BudgetStore } from "../budget/store.ts";
import { periodsAt, usdToMicro } from "../budget/store.ts";
import type { Clock } from "../clock.ts";
import type { Config } from "../config.ts";
import type { Logger } from "../obs/log.ts";
import type { Metrics } from "../obs/metrics.ts";
import type { MitigationName } from "./mitigations.ts";
import type { ControlView } from "./view.ts";

export type AutopilotConfig = Config["control"]["autopilot"];

/** A request to the aggregator: apply (active) or withdraw this edge's hold on a mitigation. */
export interface AutopilotAction {
  mitigation: MitigationName;
  active: boolean;
  params?: Record<string, unknown>;
  reason: string;
}

/** Cumulative counts a detector reads; windows are differences of two samples. */
export interface Counts {
  bad: number;
  total: number;
}

export interface AutopilotDeps {
  config: AutopilotConfig;
  view: ControlView;
  clock: Clock;
  log: Logger;
  metrics: Metrics;
  store: BudgetStore;
  globalDailyCapUsd: number;
  /** Cumulative attempts and errors per provider (the router's counters). */
  providerCounts: () => Record<string, Counts>;
  /** Cumulative voice sessions and abnormal closes. */
  voiceCounts: () => Promise<Counts>;
  send: (action: AutopilotAction) => Promise<void>;
}

/** Cumulative samples of one series; the window's counts are now minus the oldest kept. */
class Window {
  #samples: Array<{ at: number } & Counts> = [];
  constructor(private readonly ms: number) {}

  add(at: number, c: Counts): Counts & { covered: number } {
    this.#samples.push({ at, ...c });
    while (this.#samples.length > 1 && this.#samples[1].at <= at - this.ms) this.#samples.shift();
    const first = this.#samples[0];
    return { bad: c.bad - first.bad, total: c.total - first.total, covered: at - first.at };
  }
}

/**
 * Watches the detectors the alert rules encode and applies their runbook
 * mitigation through the aggregator, as actor `autopilot`, then withdraws it
 * once the condition has cleared with hysteresis: below half the threshold
 * for a whole window, so a flapping signal does not flap the mitigation.
 * Each detector is off unless enabled.
 */
export function createAutopilot(deps: AutopilotDeps) {
  const { config, view, clock, log } = deps;
  const providerWindows = new Map<string, Window>();
  const voiceWindow = new Window(config.voice_text.window_ms);
  /** When this edge applied each mitigation, for the clear-after-a-window rule. */
  const held = new Map<MitigationName, number>();

  async function act(action: AutopilotAction) {
    try {
      await deps.send(action);
      if (action.active) held.set(action.mitigation, clock.now());
      else held.delete(action.mitigation);
      deps.metrics.mitigationChanges.inc({
        mitigation: action.mitigation,
        action: action.active ? "apply" : "revert",
        actor: "autopilot",
      });
      log.warn("autopilot", { ...action });
    } catch (err) {
      log.error("autopilot action failed", { ...action, error: (err as Error).message });
    }
  }

  /** The mitigation as the snapshot has it; a hold it no longer shows (an operator lifted it) is forgotten. */
  function current(m: MitigationName) {
    const active = view.mitigation(m);
    if (!active) held.delete(m);
    return active;
  }

  /** Another edge's autopilot holds it: this edge joins, so it lasts until the last one clears. */
  const joinable = (m: MitigationName, active: { sources: string[] }) =>
    active.sources.length > 0 && !held.has(m);

  const heldLongEnough = (m: MitigationName, windowMs: number) =>
    clock.now() - (held.get(m) ?? 0) >= windowMs;

  async function providerFailover() {
    const c = config.provider_failover;
    const now = clock.now();
    let worst: { provider: string; ratio: number } | undefined;
    const ratios = new Map<string, number>();
    for (const [provider, counts] of Object.entries(deps.providerCounts())) {
      let w = providerWindows.get(provider);
      if (!w) providerWindows.set(provider, w = new Window(c.window_ms));
      const d = w.add(now, counts);
      const ratio = d.total ? d.bad / d.total : 0;
      ratios.set(provider, ratio);
      if (d.covered >= c.window_ms && d.total >= c.min_events && ratio > c.threshold) {
        if (!worst || ratio > worst.ratio) worst = { provider, ratio };
      }
    }
    const active = current("avoid_provider");
    const mine = held.has("avoid_provider");
    if (
      worst &&
      (!active ||
        (joinable("avoid_provider", active) && active.params.provider === worst.provider))
    ) {
      await act({
        mitigation: "avoid_provider",
        active: true,
        params: { provider: worst.provider },
        reason: `autopilot: ${worst.provider} error ratio ${(worst.ratio * 100).toFixed(1)}% over ${
          c.window_ms / 1000
        } s (threshold ${c.threshold * 100}%)`,
      });
    } else if (mine && active) {
      const provider = active.params.provider as string;
      if (
        (ratios.get(provider) ?? 0) <= c.threshold / 2 &&
        heldLongEnough("avoid_provider", c.window_ms)
      ) {
        await act({
          mitigation: "avoid_provider",
          active: false,
          reason: `autopilot: ${provider} error ratio back under ${c.threshold * 50}%`,
        });
      }
    }
  }

  async function spendDowngrade() {
    const c = config.spend_downgrade;
    if (deps.globalDailyCapUsd <= 0) return;
    const [spent] = await deps.store.spend([
      { scope: "global", period: "day", bucket: periodsAt(clock.now()).day },
    ]);
    const fraction = spent / usdToMicro(deps.globalDailyCapUsd);
    const active = current("enforce_downgrade");
    if (fraction > c.threshold && (!active || joinable("enforce_downgrade", active))) {
      await act({
        mitigation: "enforce_downgrade",
        active: true,
        reason: `autopilot: managed spend at ${(fraction * 100).toFixed(1)}% of the daily cap`,
      });
    } else if (fraction < c.clear_below && active && held.has("enforce_downgrade")) {
      await act({
        mitigation: "enforce_downgrade",
        active: false,
        reason: `autopilot: managed spend back under ${c.clear_below * 100}% of the daily cap`,
      });
    }
  }

  async function voiceText() {
    const c = config.voice_text;
    const d = voiceWindow.add(clock.now(), await deps.voiceCounts());
    const ratio = d.total ? d.bad / d.total : 0;
    const active = current("voice_text");
    if (
      d.covered >= c.window_ms && d.total >= c.min_events && ratio > c.threshold &&
      (!active || joinable("voice_text", active))
    ) {
      await act({
        mitigation: "voice_text",
        active: true,
        reason: `autopilot: voice dropout ${(ratio * 100).toFixed(1)}% over ${
          c.window_ms / 1000
        } s`,
      });
    } else if (
      active && held.has("voice_text") && ratio <= c.threshold / 2 &&
      heldLongEnough("voice_text", c.window_ms)
    ) {
      await act({
        mitigation: "voice_text",
        active: false,
        reason: `autopilot: voice dropout back under ${c.threshold * 50}%`,
      });
    }
  }

  /** One evaluation of every enabled detector. */
  async function tick(): Promise<void> {
    if (config.provider_failover.enabled) await providerFailover();
    if (config.spend_downgrade.enabled) await spendDowngrade();
    if (config.voice_text.enabled) await voiceText();
  }

  return { tick };
}

export type Autopilot = ReturnType<typeof createAutopilot>;
