import { ProviderError } from "../providers/types.ts";
import { decodeBase64, encodeBase64 } from "./audio.ts";
import { EventQueue, type RealtimeAdapter, type RealtimeEvent } from "./types.ts";

/** The OpenAI Realtime API takes and returns mono PCM16 at 24 kHz. */
const RATE = 24_000;

/**
 * Adapter for the OpenAI Realtime WebSocket protocol: `session.update`,
 * `input_audio_buffer.append|commit` and `response.create` out;
 * `response.audio.delta`, `response.audio_transcript.delta`,
 * `conversation.item.input_audio_transcription.completed`, `response.done`
 * and `error` in.
 */
export function createRealtimeOpenAI(baseUrl: string): RealtimeAdapter {
  return {
    codecs: ["pcm16"],
    inputRate: RATE,
    needsKey: true,
    open(opts) {
      const url = `${baseUrl}${baseUrl.includes("?") ? "&" : "?"}model=${
        encodeURIComponent(opts.model)
      }`;
      const ws = new WebSocket(url, {
        headers: {
          ...(opts.apiKey ? { authorization: `Bearer ${opts.apiKey}` } : {}),
          "openai-beta": "realtime=v1",
        },
      } as unknown as string[]);
      const queue = new EventQueue<RealtimeEvent>();
      const send = (event: Record<string, unknown>) => {
        if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(event));
      };
      ws.onmessage = (m) => {
        let ev: Record<string, unknown>;
        try {
          ev = JSON.parse(String(m.data));
        } catch {
          queue.fail(new ProviderError("server", "realtime provider sent a malformed event"));
          return;
        }
        switch (ev.type) {
          case "response.audio.delta":
            queue.push({
              type: "audio",
              pcm16: decodeBase64(String(ev.delta ?? "")),
              sampleRate: RATE,
            });
            break;
          case "response.audio_transcript.delta":
            queue.push({ type: "transcript.assistant", text: String(ev.delta ?? "") });
            break;
          case "conversation.item.input_audio_transcription.completed":
            queue.push({ type: "transcript.user", text: String(ev.transcript ?? "") });
            break;
          case "response.done": {
            const usage =
              (ev.response as { usage?: { input_tokens?: number; output_tokens?: number } })
                ?.usage;
            queue.push({
              type: "turn.done",
              usage: {
                input_tokens: usage?.input_tokens ?? 0,
                output_tokens: usage?.output_tokens ?? 0,
              },
            });
            break;
          }
          case "error": {
            const err = ev.error as { message?: string; code?: string } | undefined;
            // Committing an empty buffer (voice.stop after server VAD already
            // took the turn) is harmless, not a provider failure.
            if (err?.code === "input_audio_buffer_commit_empty") break;
            queue.fail(new ProviderError("server", err?.message ?? "realtime provider error"));
            break;
          }
        }
      };
      ws.onclose = (e) => {
        if (e.code === 1000) queue.end();
        else queue.fail(new ProviderError("server", `realtime provider closed (${e.code})`));
      };
      opts.signal.addEventListener("abort", () => ws.close(1000), { once: true });
      return new Promise((resolve, reject) => {
        ws.onerror = () =>
          reject(new ProviderError("connect", "cannot reach the realtime provider"));
        ws.onopen = () => {
          ws.onerror = () => queue.fail(new ProviderError("server", "realtime socket error"));
          send({
            type: "session.update",
            session: {
              modalities: ["text", "audio"],
              input_audio_format: "pcm16",
              output_audio_format: "pcm16",
              input_audio_transcription: { model: "whisper-1" },
              turn_detection: opts.vad ? { type: "server_vad" } : null,
            },
          });
          resolve({
            append(audio) {
              send({ type: "input_audio_buffer.append", audio: encodeBase64(audio) });
            },
            commit() {
              send({ type: "input_audio_buffer.commit" });
              send({ type: "response.create" });
            },
            events: queue,
            close() {
              ws.close(1000);
            },
          });
        };
      });
    },
  };
}
