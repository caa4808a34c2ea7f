import type { Config, ProviderConfig } from "../config.ts";
import { createMockAdapter } from "./mock.ts";
import { createAnthropicAdapter } from "./openai_anthropic.ts";
import { azureOpenAIEndpoint } from "./openai_azureopenai.ts";
import { createOpenAIAdapter, openaiEndpoint } from "./openai_openai.ts";
import type { ProviderAdapter } from "./types.ts";

/** One chat adapter per configured chat provider, chosen by wire protocol. */
export function adapterFor(cfg: ProviderConfig): ProviderAdapter | undefined {
  switch (cfg.protocol) {
    case "mock":
      return createMockAdapter(cfg);
    case "anthropic":
      return createAnthropicAdapter({ baseUrl: cfg.base_url, version: cfg.anthropic_version });
    case "openai":
      return createOpenAIAdapter(
        cfg.flavor === "azure"
          ? azureOpenAIEndpoint(cfg.base_url, cfg.api_version!)
          : openaiEndpoint(cfg.base_url),
      );
    default:
      return undefined; // realtime (voice) providers: see src/voice/registry.ts
  }
}

export function buildAdapters(config: Config): Record<string, ProviderAdapter> {
  const adapters: Record<string, ProviderAdapter> = {};
  for (const [name, cfg] of Object.entries(config.providers)) {
    const adapter = adapterFor(cfg);
    if (adapter) adapters[name] = adapter;
  }
  return adapters;
}
