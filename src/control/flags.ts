import { fnv1a } from "../hash.ts";
import { z } from "zod";

/** Plugin permissions from the contract; the high-risk ones need an admin's approval. */
export const PERMISSIONS = [
  "fs.read",
  "fs.write",
  "net.http",
  "net.websocket",
  "proc.exec",
  "secrets.read",
  "ui.embed",
  "telemetry.emit",
] as const;
export const PermissionSchema = z.enum(PERMISSIONS);
export type Permission = z.infer<typeof PermissionSchema>;
export const HIGH_RISK: readonly Permission[] = [
  "fs.read",
  "fs.write",
  "proc.exec",
  "secrets.read",
];

export const RoutingPolicySchema = z.union([
  z.enum(["priority", "cheapest"]),
  z.string().regex(
    /^force:[\w.-]+$/,
    'a routing policy is "priority", "cheapest" or "force:<provider>"',
  ),
]);
export type RoutingPolicy = z.infer<typeof RoutingPolicySchema>;

/**
 * The four flags of the spec, each with its value schema, its default, and the
 * value its kill switch forces: the behaviour that needs nothing new to work.
 */
export const FLAG_DEFS = {
  routing_policy: { schema: RoutingPolicySchema, default: "priority", killed: "priority" },
  /** shadow: spend is counted and reported, but budgets never block or downgrade. */
  metering_mode: {
    schema: z.enum(["enforced", "shadow"]),
    default: "enforced",
    killed: "enforced",
  },
  voice_mode: { schema: z.enum(["on", "text-only", "off"]), default: "on", killed: "off" },
  /** Permissions granted to plugin tools; default deny. */
  plugin_permissions: {
    schema: z.array(PermissionSchema).transform((p) => [...new Set(p)].sort()),
    default: [],
    killed: [],
  },
} as const;

export type FlagName = keyof typeof FLAG_DEFS;
export const FLAG_NAMES = Object.keys(FLAG_DEFS) as FlagName[];
export const FlagNameSchema = z.enum(FLAG_NAMES as [FlagName, ...FlagName[]]);
export type FlagValue<N extends FlagName> = z.infer<(typeof FLAG_DEFS)[N]["schema"]>;

/** A flag as stored and shipped to edges. Values are checked against the flag's schema on write. */
export const FlagStateSchema = z.strictObject({
  default: z.unknown(),
  overrides: z.record(z.string().min(1), z.unknown()).default({}),
  canary: z.strictObject({ percent: z.number().int().min(0).max(100), value: z.unknown() })
    .nullable().default(null),
  killed: z.boolean().default(false),
});
export type FlagState = z.infer<typeof FlagStateSchema>;

export function defaultFlagState(name: FlagName): FlagState {
  return { default: FLAG_DEFS[name].default, overrides: {}, canary: null, killed: false };
}

/** Parses a value for a flag; a message naming the flag when it does not fit. */
export function parseFlagValue<N extends FlagName>(
  name: N,
  value: unknown,
): { ok: true; value: FlagValue<N> } | { ok: false; message: string } {
  const r = FLAG_DEFS[name].schema.safeParse(value);
  return r.success
    ? { ok: true, value: r.data as FlagValue<N> }
    : { ok: false, message: `${name}: ${r.error.issues.map((i) => i.message).join("; ")}` };
}

/**
 * A tenant's stable bucket in 0..99 for one flag: FNV-1a of flag and tenant,
 * so a canary keeps the same tenants as its percentage grows, and different
 * flags pick different tenants.
 */
export function canaryBucket(flag: string, tenant: string): number {
  return fnv1a(`${flag}\u0000${tenant}`) % 100;
}

/** Where a tenant's value came from, for logs and the admin API. */
export type FlagSource = "killed" | "override" | "canary" | "default";

/** The value a tenant gets: kill switch, then its override, then the canary, then the default. */
export function evaluateFlag<N extends FlagName>(
  name: N,
  state: FlagState | undefined,
  tenant: string,
): { value: FlagValue<N>; source: FlagSource } {
  const s = state ?? defaultFlagState(name);
  const pick = (value: unknown, source: FlagSource) => ({ value: value as FlagValue<N>, source });
  if (s.killed) return pick(FLAG_DEFS[name].killed, "killed");
  if (Object.hasOwn(s.overrides, tenant)) return pick(s.overrides[tenant], "override");
  if (s.canary && canaryBucket(name, tenant) < s.canary.percent) {
    return pick(s.canary.value, "canary");
  }
  return pick(s.default, "default");
}
