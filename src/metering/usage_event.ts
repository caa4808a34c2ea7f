import { z } from "zod";
import { ModeSchema } from "../config.ts";

/**
 * The authoritative metering unit: one per request, successful or not, with
 * the contract's fields plus `cost_usd` and `lane`. `request_id` is unique
 * within its tenant, so a redelivered event is never counted twice.
 */
export const UsageEventSchema = z.strictObject({
  request_id: z.string().min(1).max(128),
  tenant_id: z.string().min(1).max(256),
  user_id: z.string().min(1).max(256),
  session_id: z.string().min(1).max(128).nullable(),
  provider: z.string().min(1).nullable(),
  model: z.string().min(1).nullable(),
  input_tokens: z.number().int().nonnegative(),
  output_tokens: z.number().int().nonnegative(),
  tool_calls_count: z.number().int().nonnegative(),
  audio_seconds_in: z.number().nonnegative(),
  audio_seconds_out: z.number().nonnegative(),
  latency_ms: z.number().int().nonnegative(),
  /** Time to first token of a stream; absent for non-streamed requests (and older edges). */
  ttft_ms: z.number().int().nonnegative().nullable().optional(),
  success: z.boolean(),
  error_code: z.string().min(1).nullable(),
  mode: ModeSchema,
  /** The billing lane; the contract's `mode`, named as billing reads it. */
  lane: ModeSchema,
  cost_usd: z.number().nonnegative(),
  occurred_at: z.iso.datetime(),
}).refine((e) => e.lane === e.mode, { message: "lane must equal mode", path: ["lane"] })
  .refine((e) => e.success === (e.error_code === null), {
    message: "error_code is set exactly when success is false",
    path: ["error_code"],
  });
export type UsageEvent = z.infer<typeof UsageEventSchema>;

/** A batch as edges send it; events are validated one by one so a bad one cannot sink the rest. */
export const BatchSchema = z.strictObject({
  batch_id: z.string().min(1).max(128),
  edge_id: z.string().min(1).max(128).optional(),
  events: z.array(z.unknown()).min(1).max(10_000),
});
export type Batch = { batch_id: string; edge_id?: string; events: UsageEvent[] };
