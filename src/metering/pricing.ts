import type { ModelConfig } from "../config.ts";
import type { TokenUsage } from "../providers/types.ts";

/** Cost = (T_in / 1e6) · P_in + (T_out / 1e6) · P_out, rounded to a millionth of a dollar. */
export function costUsd(price: ModelConfig["price"], usage: TokenUsage): number {
  const raw = (usage.input_tokens / 1e6) * price.input_per_1m +
    (usage.output_tokens / 1e6) * price.output_per_1m;
  return Math.round(raw * 1e6) / 1e6;
}
