import assert from "node:assert/strict";
import type { RealtimeMockConfig } from "../../src/config.ts";
import { ProviderError } from "../../src/providers/types.ts";
import { createRealtimeMock } from "../../src/voice/realtime_mock.ts";
import type { RealtimeEvent, RealtimeOpenOptions, RealtimeSession } from "../../src/voice/types.ts";

const REPLY = ["Hello ", "from ", "the ", "Convergio ", "demo ", "voice."];

const mock = (cfg: Partial<RealtimeMockConfig> = {}) =>
  createRealtimeMock({
    protocol: "realtime_mock",
    first_audio_ms: 0,
    fail: "none",
    fail_every: 1,
    ...cfg,
  });

const options = (vad: boolean, signal: AbortSignal): RealtimeOpenOptions => ({
  model: "demo-realtime",
  codec: "pcm16",
  sampleRate: 16_000,
  vad,
  signal,
});

/** Rejects after `ms` so that no wait is unbounded. */
function bounded<T>(p: Promise<T>, ms = 5_000, what = "operation"): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Reads events until the iterator ends or `stop` says so. */
async function collect(
  session: RealtimeSession,
  stop: (ev: RealtimeEvent, all: RealtimeEvent[]) => boolean = () => false,
): Promise<RealtimeEvent[]> {
  const out: RealtimeEvent[] = [];
  await bounded(
    (async () => {
      for await (const ev of session.events) {
        out.push(ev);
        if (stop(ev, out)) break;
      }
    })(),
    5_000,
    "event iterator",
  );
  return out;
}

function assertTurn(events: RealtimeEvent[], seconds: number) {
  assert.deepEqual(events[0], {
    type: "transcript.user",
    text: `I heard ${seconds.toFixed(1)} seconds of audio.`,
  });
  const assistant = events.filter((e) => e.type === "transcript.assistant");
  assert.deepEqual(assistant.map((e) => e.type === "transcript.assistant" && e.text), REPLY);
  const audio = events.filter((e) => e.type === "audio");
  assert.equal(audio.length, REPLY.length);
  for (const a of audio) {
    assert.ok(a.type === "audio");
    assert.equal(a.sampleRate, 24_000);
    assert.equal(a.pcm16.length, 4_800); // 0.1 s of 16-bit mono at 24 kHz
    assert.equal(a.pcm16.length / 2 / a.sampleRate, 0.1);
  }
  // words and their audio alternate
  for (let i = 1; i < 1 + REPLY.length * 2; i += 2) {
    assert.equal(events[i].type, "transcript.assistant");
    assert.equal(events[i + 1].type, "audio");
  }
  const done = events[events.length - 1];
  assert.deepEqual(done, {
    type: "turn.done",
    usage: { input_tokens: Math.ceil(seconds * 10), output_tokens: REPLY.length * 5 },
  });
  assert.equal(events.length, 1 + REPLY.length * 2 + 1);
}

Deno.test("mock push-to-talk: a turn on commit, with what it heard, words, audio and usage", async () => {
  const ac = new AbortController();
  const session = await mock().open(options(false, ac.signal));
  try {
    session.append(new Uint8Array(16_000), 0.5);
    session.append(new Uint8Array(16_000), 0.5);
    session.append(new Uint8Array(9_600), 0.3);
    // no turn before commit in push-to-talk, even past the VAD threshold
    session.commit();
    session.close();
    const events = await collect(session);
    assertTurn(events, 1.3);
  } finally {
    ac.abort();
  }
});

Deno.test("mock push-to-talk: two commits make two turns, each with its own audio", async () => {
  const ac = new AbortController();
  const session = await mock().open(options(false, ac.signal));
  try {
    session.append(new Uint8Array(2), 0.2);
    session.commit();
    session.append(new Uint8Array(2), 2.5);
    session.commit();
    session.close();
    const events = await collect(session);
    const cut = events.findIndex((e) => e.type === "turn.done") + 1;
    assertTurn(events.slice(0, cut), 0.2);
    assertTurn(events.slice(cut), 2.5);
  } finally {
    ac.abort();
  }
});

Deno.test("mock vad: a turn once at least 1 s is heard, no commit needed", async () => {
  const ac = new AbortController();
  const session = await mock().open(options(true, ac.signal));
  try {
    session.append(new Uint8Array(2), 0.4);
    session.append(new Uint8Array(2), 0.4);
    session.append(new Uint8Array(2), 0.4); // 1.2 s: the turn
    const events = await collect(session, (ev) => ev.type === "turn.done");
    // what it heard is the running float sum (1.2000000000000002: 13 demo tokens)
    assertTurn(events, 0.4 + 0.4 + 0.4);
    // what it heard was reset: a commit now has nothing to answer
    session.commit();
    session.close();
    assert.deepEqual(await collect(session), []);
  } finally {
    ac.abort();
  }
});

Deno.test("mock vad: under 1 s heard makes no turn until commit", async () => {
  const ac = new AbortController();
  const session = await mock().open(options(true, ac.signal));
  try {
    session.append(new Uint8Array(2), 0.5);
    session.append(new Uint8Array(2), 0.4);
    session.commit();
    session.close();
    assertTurn(await collect(session), 0.5 + 0.4);
  } finally {
    ac.abort();
  }
});

Deno.test("mock: commit with nothing heard produces no turn", async () => {
  const ac = new AbortController();
  const session = await mock().open(options(false, ac.signal));
  try {
    session.commit();
    session.commit();
    session.close();
    assert.deepEqual(await collect(session), []);
  } finally {
    ac.abort();
  }
});

Deno.test("mock: fail connect every Nth session", async () => {
  const adapter = mock({ fail: "connect", fail_every: 3 });
  const ac = new AbortController();
  try {
    const outcomes: string[] = [];
    for (let i = 1; i <= 7; i++) {
      try {
        const s = await adapter.open(options(false, ac.signal));
        s.close();
        outcomes.push("ok");
      } catch (err) {
        assert.ok(err instanceof ProviderError);
        assert.equal(err.kind, "connect");
        outcomes.push("fail");
      }
    }
    assert.deepEqual(outcomes, ["ok", "ok", "fail", "ok", "ok", "fail", "ok"]);
    // fail_every 1 fails every session
    const always = mock({ fail: "connect" });
    await assert.rejects(always.open(options(false, ac.signal)), ProviderError);
    await assert.rejects(always.open(options(false, ac.signal)), ProviderError);
  } finally {
    ac.abort();
  }
});

Deno.test("mock: midstream failure fails the iterator on the first turn", async () => {
  const ac = new AbortController();
  const session = await mock({ fail: "midstream" }).open(options(false, ac.signal));
  try {
    session.append(new Uint8Array(2), 1);
    session.commit();
    const seen: RealtimeEvent[] = [];
    await assert.rejects(
      bounded(
        (async () => {
          for await (const ev of session.events) seen.push(ev);
        })(),
      ),
      (err) => {
        assert.ok(err instanceof ProviderError);
        assert.equal(err.kind, "server");
        return true;
      },
    );
    assert.deepEqual(seen, []);
  } finally {
    session.close();
    ac.abort();
  }
});

Deno.test("mock: midstream with fail_every 2 fails only the second session", async () => {
  const adapter = mock({ fail: "midstream", fail_every: 2 });
  const ac = new AbortController();
  try {
    const first = await adapter.open(options(false, ac.signal));
    first.append(new Uint8Array(2), 0.5);
    first.commit();
    first.close();
    assertTurn(await collect(first), 0.5);

    const second = await adapter.open(options(false, ac.signal));
    second.append(new Uint8Array(2), 0.5);
    second.commit();
    await assert.rejects(bounded(collect(second)), ProviderError);
    second.close();
  } finally {
    ac.abort();
  }
});

Deno.test("mock: abort ends the iterator and waits no first_audio_ms", async () => {
  const ac = new AbortController();
  const session = await mock({ first_audio_ms: 60_000 }).open(options(false, ac.signal));
  session.append(new Uint8Array(2), 1);
  session.commit();
  const reading = collect(session);
  ac.abort(new Error("done"));
  assert.deepEqual(await reading, []);
  session.close();
});
