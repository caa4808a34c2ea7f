import assert from "node:assert/strict";
import { ProviderError } from "../../src/providers/types.ts";
import { createRealtimeOpenAI } from "../../src/voice/realtime_openai.ts";

import {
  adapterOptions as options,
  FakeRealtime,
  fullTurn,
  pcm24k,
  readUntil,
  readUntilFailure,
  REALTIME_MODEL as MODEL,
  sends,
  serverCloseCode,
  type Wire,
  withAdapterSession,
} from "./_fake_realtime.ts";
import { bounded } from "./_voice_support.ts";

const API_KEY = "sk-test-realtime";

Deno.test("openai realtime: headers, model query, session.update for push-to-talk, mapped events", async () => {
  await withAdapterSession({}, async ({ fake, session }) => {
    const adapter = createRealtimeOpenAI(fake.url);
    assert.deepEqual(adapter.codecs, ["pcm16"]);
    assert.equal(adapter.inputRate, 24_000);
    assert.deepEqual(fake.upgrades, [{
      auth: `Bearer ${API_KEY}`,
      beta: "realtime=v1",
      model: MODEL,
    }]);
    const update = await fake.sent("session.update");
    const s = update.session as Record<string, unknown>;
    assert.equal(s.turn_detection, null);
    assert.equal(s.input_audio_format, "pcm16");
    assert.equal(s.output_audio_format, "pcm16");
    assert.deepEqual(s.modalities, ["text", "audio"]);
    assert.ok(s.input_audio_transcription, "asks for the caller's transcript");

    const a = pcm24k(0.02);
    const b = pcm24k(0.04);
    session.append(a, 0.02);
    session.append(b, 0.04);
    session.commit();
    await fake.sent("response.create");
    const types = fake.received.map((e) => e.type);
    assert.deepEqual(types, [
      "session.update",
      "input_audio_buffer.append",
      "input_audio_buffer.append",
      "input_audio_buffer.commit",
      "response.create",
    ]);
    assert.deepEqual(fake.appended, [a, b]);

    const events = await readUntil(session, (e) => e.type === "turn.done");
    assert.deepEqual(events.map((e) => e.type), [
      "transcript.user",
      "transcript.assistant",
      "audio",
      "transcript.assistant",
      "audio",
      "turn.done",
    ]);
    assert.deepEqual(events[0], { type: "transcript.user", text: "What is the weather?" });
    assert.deepEqual(events[1], { type: "transcript.assistant", text: "It is " });
    assert.deepEqual(events[3], { type: "transcript.assistant", text: "sunny." });
    for (const ev of [events[2], events[4]]) {
      assert.ok(ev.type === "audio");
      assert.equal(ev.sampleRate, 24_000);
      assert.deepEqual(ev.pcm16, fake.replyAudio);
    }
    assert.deepEqual(events[5], {
      type: "turn.done",
      usage: { input_tokens: 42, output_tokens: 15 },
    });
  });
});

Deno.test("openai realtime: vad asks for server_vad; a model query joins an existing query", async () => {
  await withAdapterSession({}, async ({ fake }) => {
    const update = await fake.sent("session.update");
    assert.deepEqual((update.session as Wire).turn_detection, { type: "server_vad" });
    assert.equal((update.session as Wire).input_audio_format, "pcm16");
    assert.equal(fake.upgrades[0].model, MODEL);
  }, { url: (fake) => `${fake.url}?foo=bar`, open: { vad: true } });
});

Deno.test("openai realtime: usage missing from response.done counts as zero tokens", async () => {
  await withAdapterSession(
    { onResponse: sends({ type: "response.done", response: { id: "r" } }) },
    async ({ session }) => {
      session.append(pcm24k(0.02), 0.02);
      session.commit();
      const events = await readUntil(session, (e) => e.type === "turn.done");
      assert.deepEqual(events, [{
        type: "turn.done",
        usage: { input_tokens: 0, output_tokens: 0 },
      }]);
    },
  );
});

/** Cases where the upstream fails mid-turn: what was read before, and how the iterator fails. */
const failingTurns: Array<
  { name: string; onResponse: (socket: WebSocket) => void; seen: string; message: RegExp }
> = [
  {
    name: "openai realtime: an error event fails the iterator with a ProviderError",
    onResponse: sends(
      { type: "response.audio_transcript.delta", delta: "partial" },
      {
        type: "error",
        event_id: "evt_1",
        error: { type: "server_error", code: "server_error", message: "upstream exploded" },
      },
    ),
    seen: "partial",
    message: /upstream exploded/,
  },
  {
    name: "openai realtime: an abnormal server close fails the iterator",
    onResponse(socket) {
      socket.send(JSON.stringify({ type: "response.audio_transcript.delta", delta: "Hi" }));
      socket.close(4000, "going away badly");
    },
    seen: "Hi",
    message: /4000/,
  },
];

for (const t of failingTurns) {
  Deno.test(t.name, async () => {
    await withAdapterSession({ onResponse: t.onResponse }, async ({ session }) => {
      session.append(pcm24k(0.02), 0.02);
      session.commit();
      const seen = await readUntilFailure(session, (err) => {
        assert.ok(err instanceof ProviderError);
        assert.equal(err.kind, "server");
        assert.match(err.message, t.message);
        return true;
      });
      assert.deepEqual(seen, [{ type: "transcript.assistant", text: t.seen }]);
    });
  });
}

Deno.test("openai realtime: input_audio_buffer_commit_empty is ignored", async () => {
  const onResponse = (socket: WebSocket, fake: FakeRealtime) => {
    sends({
      type: "error",
      error: {
        type: "invalid_request_error",
        code: "input_audio_buffer_commit_empty",
        message: "buffer too small",
      },
    })(socket);
    fullTurn(socket, fake);
  };
  await withAdapterSession({ onResponse }, async ({ session }) => {
    session.commit();
    const events = await readUntil(session, (e) => e.type === "turn.done");
    assert.equal(events[0].type, "transcript.user");
    assert.deepEqual(events[events.length - 1], {
      type: "turn.done",
      usage: { input_tokens: 42, output_tokens: 15 },
    });
  });
});

Deno.test("openai realtime: a malformed event fails the iterator", async () => {
  await withAdapterSession({ onResponse: sends("{not json") }, async ({ session }) => {
    session.commit();
    await assert.rejects(readUntil(session, () => false), ProviderError);
  });
});

Deno.test("openai realtime: connection refused rejects open with kind connect", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const ac = new AbortController();
  try {
    await assert.rejects(
      bounded(createRealtimeOpenAI(`ws://127.0.0.1:${port}/v1/realtime`).open(options(ac.signal))),
      (err) => {
        assert.ok(err instanceof ProviderError);
        assert.equal(err.kind, "connect");
        return true;
      },
    );
  } finally {
    ac.abort();
  }
});

Deno.test("openai realtime: a refused upgrade (wrong key) rejects open with kind connect", async () => {
  const fake = new FakeRealtime();
  const ac = new AbortController();
  try {
    await assert.rejects(
      bounded(createRealtimeOpenAI(fake.url).open(options(ac.signal, { apiKey: "sk-wrong" }))),
      (err) => err instanceof ProviderError && err.kind === "connect",
    );
    assert.equal(fake.upgrades[0].auth, "Bearer sk-wrong");
  } finally {
    ac.abort();
    await fake.close();
  }
});

Deno.test("openai realtime: a normal server close ends the iterator", async () => {
  const onResponse = (socket: WebSocket, fake: FakeRealtime) => {
    fullTurn(socket, fake);
    socket.close(1000);
  };
  await withAdapterSession({ onResponse }, async ({ session }) => {
    session.commit();
    const events = await readUntil(session, () => false);
    assert.equal(events[events.length - 1].type, "turn.done");
  });
});

Deno.test("openai realtime: aborting the signal closes the socket and ends the iterator", async () => {
  await withAdapterSession({}, async ({ fake, session, ac }) => {
    await fake.sent("session.update");
    const serverClosed = serverCloseCode(fake);
    const reading = readUntil(session, () => false);
    ac.abort(new Error("caller left"));
    assert.deepEqual(await reading, []);
    assert.equal(await bounded(serverClosed), 1000);
    // sending after close is a no-op, not a throw
    session.append(pcm24k(0.02), 0.02);
    session.commit();
  });
});

Deno.test("openai realtime: close() says goodbye with 1000 and ends the iterator", async () => {
  await withAdapterSession({}, async ({ fake, session }) => {
    await fake.sent("session.update");
    const serverClosed = serverCloseCode(fake);
    session.close();
    assert.deepEqual(await readUntil(session, () => false), []);
    assert.equal(await bounded(serverClosed), 1000);
  });
});
