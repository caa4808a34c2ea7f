import type { Config } from "../config.ts";
import type { Sql } from "../db/client.ts";
import { GatewayError } from "../errors.ts";
import {
  defaultFlagState,
  type FlagName,
  type FlagState,
  FlagStateSchema,
  parseFlagValue,
} from "./flags.ts";
import { MITIGATION_DEFS, type MitigationName, type MitigationState } from "./mitigations.ts";
import type { Actor, ControlStore } from "./store.ts";

interface FlagRow {
  default_value: unknown;
  overrides: Record<string, unknown>;
  canary_percent: number;
  canary_value: unknown;
  killed: boolean;
}

async function readFlag(tx: Sql, name: FlagName): Promise<FlagState | null> {
  const [row] = await tx<FlagRow[]>`
    SELECT default_value, overrides, canary_percent, canary_value, killed FROM flags
    WHERE name = ${name} FOR UPDATE`;
  if (!row) return null;
  return {
    default: row.default_value,
    overrides: row.overrides,
    canary: row.canary_percent > 0
      ? { percent: row.canary_percent, value: row.canary_value }
      : null,
    killed: row.killed,
  };
}

/** Every value a flag state holds must fit the flag: checked before anything is stored. */
function checkFlag(name: FlagName, state: FlagState, config: Config): FlagState {
  const fit = (value: unknown, where: string) => {
    const r = parseFlagValue(name, value);
    if (!r.ok) {
      throw new GatewayError("request.invalid", `${where}: ${r.message}`, { param: where });
    }
    if (name === "routing_policy" && typeof r.value === "string" && r.value.startsWith("force:")) {
      const provider = r.value.slice("force:".length);
      if (!config.providers[provider]) {
        throw new GatewayError("request.invalid", `${where}: unknown provider "${provider}"`, {
          param: where,
        });
      }
    }
    return r.value;
  };
  return {
    default: fit(state.default, "default"),
    overrides: Object.fromEntries(
      Object.entries(state.overrides).map(([t, v]) => [t, fit(v, `overrides.${t}`)]),
    ),
    canary: state.canary &&
      { percent: state.canary.percent, value: fit(state.canary.value, "canary.value") },
    killed: state.killed,
  };
}

async function writeFlag(tx: Sql, name: FlagName, s: FlagState): Promise<void> {
  const canary = s.canary && s.canary.percent > 0 ? s.canary : null;
  await tx`
    INSERT INTO flags (name, default_value, overrides, canary_percent, canary_value, killed,
      updated_at)
    VALUES (${name}, ${tx.json(s.default as never)}, ${tx.json(s.overrides as never)},
      ${canary?.percent ?? 0}, ${canary ? tx.json(canary.value as never) : null}, ${s.killed},
      now())
    ON CONFLICT (name) DO UPDATE SET default_value = EXCLUDED.default_value,
      overrides = EXCLUDED.overrides, canary_percent = EXCLUDED.canary_percent,
      canary_value = EXCLUDED.canary_value, killed = EXCLUDED.killed, updated_at = now()`;
}

/** Changes one flag with `edit`, audited as `flag.<action>`; returns the new state. */
export function changeFlag(
  control: ControlStore,
  config: Config,
  who: Actor,
  name: FlagName,
  action: string,
  reason: string | null,
  edit: (current: FlagState) => FlagState,
): Promise<FlagState> {
  return control.change(
    who,
    { action: `flag.${action}`, target: `flag:${name}`, reason },
    async (tx) => {
      const before = await readFlag(tx, name);
      const after = checkFlag(
        name,
        edit(structuredClone(before ?? defaultFlagState(name))),
        config,
      );
      await writeFlag(tx, name, after);
      return { before, after, result: after };
    },
  );
}

/**
 * RB-1's "roll back": the newest flag change is undone by restoring the
 * state it replaced. A rollback is itself a flag change, so a second one
 * re-applies what the first undid.
 */
export function rollbackLastFlagChange(
  control: ControlStore,
  config: Config,
  who: Actor,
  reason: string | null,
): Promise<{ flag: FlagName; state: FlagState; undid: number }> {
  return control.change(who, { action: "flag.rollback", target: "flag", reason }, async (tx) => {
    const [last] = await tx<{ id: string; target: string; before: unknown }[]>`
      SELECT id, target, before FROM audit_log WHERE action LIKE 'flag.%'
      ORDER BY id DESC LIMIT 1`;
    if (!last) {
      throw new GatewayError("request.invalid", "no flag change to roll back", { status: 404 });
    }
    const name = last.target.slice("flag:".length) as FlagName;
    const current = await readFlag(tx, name);
    const restored = last.before === null
      ? defaultFlagState(name)
      : checkFlag(name, FlagStateSchema.parse(last.before), config);
    await writeFlag(tx, name, restored);
    return {
      target: `flag:${name}`,
      before: current,
      after: restored,
      result: { flag: name, state: restored, undid: Number(last.id) },
    };
  });
}

function checkParams(config: Config, name: MitigationName, raw: unknown): Record<string, unknown> {
  const parsed = MITIGATION_DEFS[name].params.safeParse(raw ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new GatewayError("request.invalid", `params.${issue.path.join(".")}: ${issue.message}`, {
      param: "params",
    });
  }
  const params = parsed.data as Record<string, string>;
  if (params.to) {
    const model = config.models[params.to];
    if (!model) {
      throw new GatewayError("request.invalid", `params.to: unknown model "${params.to}"`);
    }
    if (config.providers[model.deployments[0].provider].protocol.startsWith("realtime_")) {
      throw new GatewayError("request.invalid", `params.to: "${params.to}" is a voice model`);
    }
  }
  if (params.provider && !config.providers[params.provider]) {
    throw new GatewayError(
      "request.invalid",
      `params.provider: unknown provider "${params.provider}"`,
    );
  }
  return params;
}

async function readMitigation(tx: Sql, name: MitigationName): Promise<MitigationState | null> {
  const [row] = await tx<Array<MitigationState & { activated_at: Date }>>`
    SELECT params, actor, reason, sources, activated_at FROM mitigations WHERE name = ${name}
    FOR UPDATE`;
  if (!row) return null;
  const { activated_at, ...rest } = row;
  return { ...rest, since: new Date(activated_at).toISOString() };
}

/**
 * Applies a mitigation. An autopilot (`source`) joins the ones already
 * holding it and never takes over one an operator applied.
 */
export function applyMitigation(
  control: ControlStore,
  config: Config,
  who: Actor,
  name: MitigationName,
  opts: { params?: unknown; reason: string; source?: string },
): Promise<MitigationState> {
  const params = checkParams(config, name, opts.params);
  return control.change(who, {
    action: "mitigation.apply",
    target: `mitigation:${name}`,
    reason: opts.reason,
  }, async (tx) => {
    const before = await readMitigation(tx, name);
    if (before && opts.source && (!before.sources.length || before.sources.includes(opts.source))) {
      return { before, after: before, result: before, noop: true };
    }
    const sources = opts.source
      ? [...new Set([...(before?.sources ?? []), opts.source])].sort()
      : [];
    const [row] = await tx<{ activated_at: Date }[]>`
      INSERT INTO mitigations (name, params, actor, reason, sources)
      VALUES (${name}, ${tx.json(params as never)}, ${who.actor}, ${opts.reason}, ${sources})
      ON CONFLICT (name) DO UPDATE SET params = EXCLUDED.params, actor = EXCLUDED.actor,
        reason = EXCLUDED.reason, sources = EXCLUDED.sources
      RETURNING activated_at`;
    const after: MitigationState = {
      params,
      actor: who.actor,
      reason: opts.reason,
      sources,
      since: new Date(row.activated_at).toISOString(),
    };
    return { before, after, result: after };
  });
}

/**
 * Reverts a mitigation. An autopilot only withdraws itself: the mitigation
 * ends when no autopilot holds it, and one an operator applied stays.
 */
export function revertMitigation(
  control: ControlStore,
  who: Actor,
  name: MitigationName,
  opts: { reason: string; source?: string },
): Promise<MitigationState | null> {
  return control.change(who, {
    action: "mitigation.revert",
    target: `mitigation:${name}`,
    reason: opts.reason,
  }, async (tx) => {
    const before = await readMitigation(tx, name);
    if (!before) {
      throw new GatewayError("request.invalid", `mitigation ${name} is not active`, {
        status: 404,
      });
    }
    if (opts.source && !before.sources.includes(opts.source)) {
      return { before, after: before, result: before, noop: true };
    }
    const sources = before.sources.filter((s) => s !== opts.source);
    if (opts.source && sources.length) {
      await tx`UPDATE mitigations SET sources = ${sources} WHERE name = ${name}`;
      const after = { ...before, sources };
      return { before, after, result: after };
    }
    await tx`DELETE FROM mitigations WHERE name = ${name}`;
    return { before, after: null, result: null };
  });
}
