import type { Pipeline, PipelineResult } from "./rest_pipeline.ts";

interface Pending {
  keys: string[];
  args: string[];
  resolve(value: unknown): void;
  reject(err: unknown): void;
}

async function sha1Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Runs one Lua script for many callers with as few round trips as possible:
 * when no call is on the wire, a call goes out alone (no added latency);
 * calls that arrive meanwhile wait and go out together as one `/pipeline`
 * when it returns. Under load, concurrent admissions share round trips.
 * Work off the hot path (charges, settlements) may `lingerMs` before the
 * first call goes out, so that calls finishing close together share one.
 */
export class ScriptCoalescer {
  #queue: Pending[] = [];
  #busy = false;
  readonly #sha: Promise<string>;

  constructor(
    private readonly pipeline: Pipeline,
    private readonly script: string,
    private readonly lingerMs = 0,
  ) {
    this.#sha = sha1Hex(script);
  }

  exec(keys: string[], args: string[]): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ keys, args, resolve, reject });
      if (this.#busy) return;
      this.#busy = true;
      if (this.lingerMs > 0) setTimeout(() => void this.#drain(), this.lingerMs);
      else void this.#drain();
    });
  }

  async #drain(): Promise<void> {
    try {
      while (this.#queue.length) {
        const batch = this.#queue;
        this.#queue = [];
        await this.#send(batch);
      }
    } finally {
      this.#busy = false;
    }
  }

  async #send(batch: Pending[], retried = false): Promise<void> {
    const sha = await this.#sha;
    let results: PipelineResult[];
    try {
      results = await this.pipeline(
        batch.map((c) => ["EVALSHA", sha, c.keys.length, ...c.keys, ...c.args]),
      );
    } catch (err) {
      for (const c of batch) c.reject(err);
      return;
    }
    const missing: Pending[] = [];
    results.forEach((r, i) => {
      if (r.error && /NOSCRIPT/i.test(r.error) && !retried) missing.push(batch[i]);
      else if (r.error) batch[i].reject(new Error(r.error));
      else batch[i].resolve(r.result);
    });
    if (missing.length) {
      try {
        const [loaded] = await this.pipeline([["SCRIPT", "LOAD", this.script]]);
        if (loaded.error) throw new Error(loaded.error);
      } catch (err) {
        for (const c of missing) c.reject(err);
        return;
      }
      await this.#send(missing, true);
    }
  }
}
