import { z } from "zod";

const none = z.strictObject({});

/**
 * The runbook levers that are switches rather than flag edits, each one admin
 * call to apply and one to revert. (Flag rollback and kill switches are the
 * flag API's.) The runbook says which detector each one answers.
 */
export const MITIGATION_DEFS = {
  /** RB-1: route every request to the cheapest deployment that can serve it. */
  force_cheaper_provider: { runbook: "RB-1", params: none },
  /** RB-1 (autopilot): order a failing provider's deployments last. */
  avoid_provider: { runbook: "RB-1", params: z.strictObject({ provider: z.string().min(1) }) },
  /** RB-2: serve every chat request on a smaller model alias. */
  lower_model: { runbook: "RB-2", params: z.strictObject({ to: z.string().min(1) }) },
  /** RB-2: strip tools from requests. */
  disable_tools: { runbook: "RB-2", params: none },
  /** RB-3: the managed lane is served on each tenant's downgrade model, whatever its spend. */
  enforce_downgrade: { runbook: "RB-3", params: none },
  /** RB-3: tenants created after this was applied get no managed lane. */
  block_new_managed_tenants: { runbook: "RB-3", params: none },
  /** RB-4: voice sessions answer in text. */
  voice_text: { runbook: "RB-4", params: none },
  /** RB-4: no server-side turn detection; the client ends each turn. */
  push_to_talk: { runbook: "RB-4", params: none },
  /** RB-5: admin writes are refused; reads and traffic go on. */
  read_only: { runbook: "RB-5", params: none },
} as const;

export type MitigationName = keyof typeof MITIGATION_DEFS;
export const MITIGATION_NAMES = Object.keys(MITIGATION_DEFS) as MitigationName[];
export const MitigationNameSchema = z.enum(
  MITIGATION_NAMES as [MitigationName, ...MitigationName[]],
);

export const MitigationStateSchema = z.strictObject({
  params: z.record(z.string(), z.unknown()),
  actor: z.string(),
  reason: z.string(),
  /** Autopilots (edge ids) holding it; empty when an operator applied it. */
  sources: z.array(z.string()),
  since: z.string(),
});
export type MitigationState = z.infer<typeof MitigationStateSchema>;
