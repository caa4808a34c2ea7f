import type { Config } from "../config.ts";
import { createRealtimeMock } from "./realtime_mock.ts";
import { createRealtimeOpenAI } from "./realtime_openai.ts";
import type { RealtimeAdapter } from "./types.ts";

/** One realtime adapter per configured voice provider, by wire protocol. */
export function buildRealtimeAdapters(config: Config): Record<string, RealtimeAdapter> {
  const out: Record<string, RealtimeAdapter> = {};
  for (const [name, cfg] of Object.entries(config.providers)) {
    if (cfg.protocol === "realtime_mock") out[name] = createRealtimeMock(cfg);
    if (cfg.protocol === "realtime_openai") out[name] = createRealtimeOpenAI(cfg.base_url);
  }
  return out;
}
