import type { OpenAIEndpoint } from "./openai_openai.ts";

/**
 * Azure OpenAI speaks the OpenAI wire but addresses a deployment in the path,
 * versions the API by query, and takes the key in `api-key`.
 */
export function azureOpenAIEndpoint(baseUrl: string, apiVersion: string): OpenAIEndpoint {
  const base = baseUrl.replace(/\/+$/, "");
  return {
    url: (deployment) =>
      `${base}/openai/deployments/${encodeURIComponent(deployment)}/chat/completions?api-version=${
        encodeURIComponent(apiVersion)
      }`,
    headers: (apiKey): Record<string, string> => apiKey ? { "api-key": apiKey.reveal() } : {},
  };
}
