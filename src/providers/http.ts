import { EventSourceParserStream } from "eventsource-parser/stream";
import { classifyStatus, ProviderError } from "./types.ts";

/** Pulls a human message out of the error bodies of OpenAI and Anthropic alike. */
function errorMessage(body: string, status: number): string {
  try {
    const parsed = JSON.parse(body);
    const message = parsed?.error?.message ?? parsed?.message;
    if (typeof message === "string") return message;
  } catch {
    // Not JSON: fall through to the status line.
  }
  return `upstream returned HTTP ${status}`;
}

/**
 * POSTs JSON upstream and returns the response once it is known to be 2xx.
 * Every failure becomes a classified ProviderError; an abort rethrows the
 * signal's reason so the router can tell a timeout from a client cancel.
 */
export async function postJson(
  url: string,
  headers: Record<string, string>,
  body: unknown,
  signal: AbortSignal,
): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: JSON.stringify(body),
      signal,
    });
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    throw new ProviderError("connect", `cannot reach upstream: ${(err as Error).message}`);
  }
  if (!res.ok) {
    const text = await res.text().catch(() => "");
    throw new ProviderError(classifyStatus(res.status), errorMessage(text, res.status), res.status);
  }
  return res;
}

export async function readJson(res: Response, signal: AbortSignal): Promise<unknown> {
  try {
    return await res.json();
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    throw new ProviderError(
      "server",
      `upstream sent an unreadable body: ${(err as Error).message}`,
    );
  }
}

export interface SseMessage {
  event?: string;
  data: string;
}

/** Parses an SSE response body into messages, with a spec-complete parser. */
export async function* sseMessages(res: Response, signal: AbortSignal): AsyncGenerator<SseMessage> {
  if (!res.body) throw new ProviderError("server", "upstream sent no body");
  const reader = res.body
    .pipeThrough(new TextDecoderStream())
    .pipeThrough(new EventSourceParserStream())
    .getReader();
  try {
    while (true) {
      let step: ReadableStreamReadResult<{ event?: string; data: string }>;
      try {
        step = await reader.read();
      } catch (err) {
        if (signal.aborted) throw signal.reason;
        throw new ProviderError("server", `upstream stream broke: ${(err as Error).message}`);
      }
      if (step.done) return;
      yield { event: step.value.event, data: step.value.data };
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

export function parseJsonData(data: string): Record<string, unknown> {
  try {
    return JSON.parse(data);
  } catch {
    throw new ProviderError("server", "upstream sent a malformed stream event");
  }
}
