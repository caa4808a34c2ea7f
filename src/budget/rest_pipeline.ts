/** One command's answer from an Upstash-REST `/pipeline`. */
export interface PipelineResult {
  result?: unknown;
  error?: string;
}

/** Sends commands as one round trip; each gets its own answer or error. */
export type Pipeline = (commands: Array<Array<string | number>>) => Promise<PipelineResult[]>;

/**
 * The hot path's Redis client: a bare `POST /pipeline` of the Upstash REST
 * protocol (Upstash itself, serverless-redis-http, or the dev bridge). The
 * general-purpose client builds a command object and base64-decodes every
 * answer; the budget scripts' answers are numbers and ASCII, so neither is
 * needed on every request.
 */
export function restPipeline(opts: { url: string; token: string; timeoutMs: number }): Pipeline {
  const endpoint = `${opts.url.replace(/\/$/, "")}/pipeline`;
  const authorization = `Bearer ${opts.token}`;
  return async (commands) => {
    const res = await fetch(endpoint, {
      method: "POST",
      headers: { authorization, "content-type": "application/json" },
      body: JSON.stringify(commands),
      signal: AbortSignal.timeout(opts.timeoutMs),
    });
    const body = await res.json().catch(() => null);
    if (!res.ok || !Array.isArray(body) || body.length !== commands.length) {
      const reason = body && typeof body === "object" && "error" in body ? body.error : res.status;
      throw new Error(`redis pipeline failed: ${reason}`);
    }
    return body as PipelineResult[];
  };
}
