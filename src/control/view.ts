import { own } from "../record.ts";
import type { Config } from "../config.ts";
import type { Secret } from "../secret.ts";
import { evaluateFlag, type FlagName, type FlagSource, type FlagValue } from "./flags.ts";
import type { MitigationName, MitigationState } from "./mitigations.ts";
import { type ControlSnapshot, emptySnapshot } from "./snapshot.ts";

type Sections = Pick<Config, "tenants" | "plans" | "models">;

/**
 * An edge's view of the control plane: flag values per tenant, active
 * mitigations, and the admin API's tenants, plans and model changes laid over
 * the config file. Config is read per request everywhere, so the overlay
 * replaces its sections in place: every reader sees a change at once, and
 * the file's own values come back when the admin API drops a change.
 */
export class ControlView {
  #snapshot: ControlSnapshot = emptySnapshot();
  readonly #base: Sections;

  constructor(private readonly config: Config, snapshot?: ControlSnapshot) {
    this.#base = { tenants: config.tenants, plans: config.plans, models: config.models };
    if (snapshot) this.apply(snapshot);
  }

  get snapshot(): ControlSnapshot {
    return this.#snapshot;
  }

  get version(): string {
    return this.#snapshot.version;
  }

  /** `byok`: the tenants' opened provider keys, which win over the config file's. */
  apply(snapshot: ControlSnapshot, byok: Record<string, Record<string, Secret>> = {}): void {
    this.#snapshot = snapshot;
    Object.assign(this.config, overlay(this.#base, this.config.providers, snapshot, byok));
  }

  flag<N extends FlagName>(name: N, tenant: string): FlagValue<N> {
    return evaluateFlag(name, this.#snapshot.flags[name], tenant).value;
  }

  /** The value and where it came from, for the admin API's explain view. */
  explain<N extends FlagName>(
    name: N,
    tenant: string,
  ): { value: FlagValue<N>; source: FlagSource } {
    return evaluateFlag(name, this.#snapshot.flags[name], tenant);
  }

  mitigation(name: MitigationName): MitigationState | undefined {
    return this.#snapshot.mitigations[name];
  }

  /** A tenant's tool allow-list; null when it has none. */
  tools(tenant: string): string[] | null {
    return own(this.#snapshot.tenants, tenant)?.tools ?? null;
  }

  /** When the tenant was created through the admin API; undefined for others. */
  createdAt(tenant: string): number | undefined {
    const t = own(this.#snapshot.tenants, tenant);
    return t ? Date.parse(t.created_at) : undefined;
  }

  /** Named in the config file: a tenant from before any admin-API change. */
  inConfigFile(tenant: string): boolean {
    return Object.hasOwn(this.#base.tenants, tenant);
  }

  isKnownTenant(tenant: string): boolean {
    return Object.hasOwn(this.#snapshot.tenants, tenant) ||
      Object.hasOwn(this.#base.tenants, tenant);
  }
}

/**
 * The config file's tenants, plans and models with the snapshot's laid over
 * them; a model change may only name configured providers.
 */
function overlay(
  base: Sections,
  providers: Config["providers"],
  snapshot: ControlSnapshot,
  byok: Record<string, Record<string, Secret>>,
): Sections {
  const tenants = { ...base.tenants };
  for (const [id, t] of Object.entries(snapshot.tenants)) {
    const file = own(base.tenants, id);
    tenants[id] = {
      byok_keys: file?.byok_keys ?? {},
      plan: t.plan ?? file?.plan,
      limits: { ...file?.limits, ...t.limits },
      downgrade_model: t.downgrade_model ?? file?.downgrade_model,
    };
  }
  for (const [id, keys] of Object.entries(byok)) {
    const t = own(tenants, id) ?? { byok_keys: {}, limits: {} };
    tenants[id] = { ...t, byok_keys: { ...t.byok_keys, ...keys } };
  }
  const models = { ...base.models };
  for (const [alias, m] of Object.entries(snapshot.models)) {
    const model = own(base.models, alias);
    if (!model) continue;
    const deployments = m.deployments?.filter((d) => own(providers, d.provider));
    models[alias] = {
      ...model,
      price: m.price ?? model.price,
      deployments: deployments?.length ? deployments : model.deployments,
    };
  }
  return { tenants, plans: { ...base.plans, ...snapshot.plans }, models };
}

/** A copy of `config` with the snapshot laid over it, for readers that hold no ControlView. */
export function overlaid(config: Config, snapshot: ControlSnapshot): Config {
  return { ...config, ...overlay(config, config.providers, snapshot, {}) };
}
