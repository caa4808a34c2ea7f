import type { Codec } from "./audio.ts";
import type { TokenUsage } from "../providers/types.ts";

/** What a realtime (voice) provider says during a session, whatever its wire protocol. */
export type RealtimeEvent =
  | { type: "transcript.user"; text: string }
  | { type: "transcript.assistant"; text: string }
  /** Assistant audio: mono PCM16 at `sampleRate`. */
  | { type: "audio"; pcm16: Uint8Array; sampleRate: number }
  | { type: "turn.done"; usage: TokenUsage };

export interface RealtimeSession {
  /** Caller audio, already in a codec and rate the adapter declared it takes. */
  append(audio: Uint8Array, seconds: number): void;
  /** Ends the caller's turn (push-to-talk, or voice.stop): the provider answers. */
  commit(): void;
  /** Ends with the session; throws a ProviderError when the provider fails. */
  events: AsyncIterable<RealtimeEvent>;
  close(): void;
}

export interface RealtimeOpenOptions {
  model: string;
  codec: Codec;
  sampleRate: number;
  /** Server-side turn detection; off for push-to-talk. */
  vad: boolean;
  apiKey?: string;
  signal: AbortSignal;
}

export interface RealtimeAdapter {
  /** Input codecs taken as sent; PCM16 is resampled to `inputRate` when set. */
  codecs: Codec[];
  inputRate?: number;
  /** Needs an API key (the house key, or the tenant's in BYOK). */
  needsKey?: boolean;
  open(opts: RealtimeOpenOptions): Promise<RealtimeSession>;
}

/** A push queue read as an async iterable: how adapters turn callbacks into `events`. */
export class EventQueue<T> {
  #items: T[] = [];
  #waiting?: (v: void) => void;
  #error?: unknown;
  #done = false;

  push(item: T): void {
    this.#items.push(item);
    this.#waiting?.();
  }

  fail(err: unknown): void {
    this.#error ??= err;
    this.#waiting?.();
  }

  end(): void {
    this.#done = true;
    this.#waiting?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    while (true) {
      if (this.#items.length) {
        yield this.#items.shift()!;
        continue;
      }
      if (this.#error) throw this.#error;
      if (this.#done) return;
      await new Promise<void>((resolve) => (this.#waiting = resolve));
      this.#waiting = undefined;
    }
  }
}
