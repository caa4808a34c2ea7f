/**
 * A policy canary through the control plane's flag API (docs/control-plane.md):
 * `PUT /admin/flags/{name}/canary {percent, value, reason}` per step, then
 * `…/canary/promote` or `…/canary/rollback`. The gateway picks the canary's
 * tenants (sticky FNV-1a buckets), so widening keeps the tenants already in.
 */
import { isDeepStrictEqual } from "node:util";
import type { FetchLike } from "./sources.ts";
import type { TrafficSwitch } from "./rollout.ts";

export interface FlagOptions {
  /** Admin API base: the aggregator, or an edge (it forwards `/admin/flags`). */
  gateway: string;
  token: string;
  name: string;
  value: unknown;
  /** Audited with every call; the API wants 3 to 500 characters. */
  reason: string;
  timeoutMs?: number;
}

/** A flag value from the command line: JSON when it parses (lists), else the plain string. */
export function parseFlagValue(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

export class AdminApiError extends Error {
  constructor(message: string, readonly status: number) {
    super(message);
    this.name = "AdminApiError";
  }
}

function reasonText(text: string): string {
  const flat = text.replace(/\s+/g, " ").trim();
  return (flat.length < 3 ? `${flat} (canary)` : flat).slice(0, 500);
}

export class FlagSwitch implements TrafficSwitch {
  readonly #base: string;

  constructor(private readonly o: FlagOptions, private readonly fetch: FetchLike) {
    this.#base = `${o.gateway.replace(/\/$/, "")}/admin/flags/${encodeURIComponent(o.name)}`;
  }

  describe(): string[] {
    const v = JSON.stringify(this.o.value);
    return [
      `traffic: flag ${this.o.name} = ${v} for the tenants in the canary buckets, via ${this.o.gateway}`,
      `  each step: PUT /admin/flags/${this.o.name}/canary {"percent":<step>,"value":${v},"reason":…}`,
      `  end: POST /admin/flags/${this.o.name}/canary/promote, or …/canary/rollback on a breach`,
    ];
  }

  async #call(method: string, url: string, body?: object): Promise<Record<string, unknown>> {
    let res: Response;
    try {
      res = await this.fetch(url, {
        method,
        headers: {
          authorization: `Bearer ${this.o.token}`,
          ...(body ? { "content-type": "application/json" } : {}),
        },
        body: body ? JSON.stringify(body) : undefined,
        signal: AbortSignal.timeout(this.o.timeoutMs ?? 10_000),
      });
    } catch (err) {
      throw new AdminApiError(`${method} ${url}: ${(err as Error).message}`, 0);
    }
    const text = await res.text();
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(text);
    } catch { /* an error page: reported as text below */ }
    if (!res.ok) {
      const err = json.error as { message?: string } | undefined;
      throw new AdminApiError(
        `${method} ${url}: HTTP ${res.status} ${err?.message ?? text.slice(0, 300)}`,
        res.status,
      );
    }
    return json;
  }

  /**
   * Refuses to start over another canary of the same flag (whose value would
   * be replaced), or on a killed flag (the kill switch wins over any canary).
   */
  async preflight(): Promise<void> {
    const url = this.#base.replace(/\/admin\/flags\/[^/]+$/, "/admin/flags");
    const body = await this.#call("GET", url);
    const flags = body.flags as Record<
      string,
      { canary?: { value: unknown } | null; killed?: boolean }
    >;
    const state = flags?.[this.o.name];
    if (!state) {
      throw new Error(
        `unknown flag ${this.o.name}; flags are ${Object.keys(flags ?? {}).join(", ")}`,
      );
    }
    if (state.killed) {
      throw new Error(`flag ${this.o.name} is killed; a canary would change nothing`);
    }
    if (state.canary && !isDeepStrictEqual(state.canary.value, this.o.value)) {
      throw new Error(
        `flag ${this.o.name} already has a canary of ${
          JSON.stringify(state.canary.value)
        }; promote or roll it back first`,
      );
    }
  }

  async apply(percent: number): Promise<string> {
    await this.#call("PUT", `${this.#base}/canary`, {
      percent,
      value: this.o.value,
      reason: reasonText(`${this.o.reason} (step ${percent}%)`),
    });
    return `PUT /admin/flags/${this.o.name}/canary percent ${percent}`;
  }

  async promote(): Promise<string> {
    await this.#call("POST", `${this.#base}/canary/promote`, {
      reason: reasonText(`${this.o.reason} (promoted: all steps healthy)`),
    });
    return `POST /admin/flags/${this.o.name}/canary/promote: ${
      JSON.stringify(this.o.value)
    } is the default`;
  }

  async rollback(reason: string): Promise<string> {
    try {
      await this.#call("POST", `${this.#base}/canary/rollback`, {
        reason: reasonText(`${this.o.reason}: rolled back, ${reason}`),
      });
    } catch (err) {
      // 409: no canary in progress (the first PUT never landed): nothing to undo.
      if (!(err instanceof AdminApiError && err.status === 409)) throw err;
      return `POST /admin/flags/${this.o.name}/canary/rollback: no canary was in progress`;
    }
    return `POST /admin/flags/${this.o.name}/canary/rollback: canary dropped`;
  }
}
