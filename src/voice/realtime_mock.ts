import type { RealtimeMockConfig } from "../config.ts";
import { sleep } from "../providers/sleep.ts";
import { ProviderError } from "../providers/types.ts";
import { EventQueue, type RealtimeAdapter, type RealtimeEvent } from "./types.ts";

const OUT_RATE = 24_000;
/** With VAD on, the demo "hears" a turn end after this much audio. */
const VAD_TURN_SECONDS = 1;
const REPLY = ["Hello ", "from ", "the ", "Convergio ", "demo ", "voice."];

/**
 * The demo realtime provider: for each turn, the caller's transcript (how
 * much audio it heard), an assistant transcript and 0.1 s of audio per word.
 * Deterministic, with failure injection on every Nth session.
 */
export function createRealtimeMock(cfg: RealtimeMockConfig): RealtimeAdapter {
  let sessions = 0;
  return {
    codecs: ["pcm16", "opus"],
    open(opts) {
      sessions++;
      const failing = cfg.fail !== "none" && sessions % cfg.fail_every === 0;
      if (failing && cfg.fail === "connect") {
        return Promise.reject(
          new ProviderError("connect", "demo voice provider injected connect failure"),
        );
      }
      const queue = new EventQueue<RealtimeEvent>();
      let heard = 0;
      let turn: Promise<void> = Promise.resolve();
      const respond = (seconds: number) => {
        turn = turn.then(async () => {
          await sleep(cfg.first_audio_ms, opts.signal);
          if (failing && cfg.fail === "midstream") {
            queue.fail(
              new ProviderError("server", "demo voice provider injected mid-session failure"),
            );
            return;
          }
          queue.push({
            type: "transcript.user",
            text: `I heard ${seconds.toFixed(1)} seconds of audio.`,
          });
          for (const word of REPLY) {
            queue.push({ type: "transcript.assistant", text: word });
            queue.push({
              type: "audio",
              pcm16: new Uint8Array(OUT_RATE / 10 * 2),
              sampleRate: OUT_RATE,
            });
          }
          queue.push({
            type: "turn.done",
            usage: { input_tokens: Math.ceil(seconds * 10), output_tokens: REPLY.length * 5 },
          });
        }).catch((err) => queue.fail(err));
      };
      opts.signal.addEventListener("abort", () => queue.end(), { once: true });
      return Promise.resolve({
        append(_audio, seconds) {
          heard += seconds;
          if (opts.vad && heard >= VAD_TURN_SECONDS) {
            respond(heard);
            heard = 0;
          }
        },
        commit() {
          if (heard > 0) respond(heard);
          heard = 0;
        },
        events: queue,
        close() {
          turn.finally(() => queue.end());
        },
      });
    },
  };
}
