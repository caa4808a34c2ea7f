import { snapshot } from "../support/control.ts";
import assert from "node:assert/strict";
import { periodsAt } from "../../src/budget/store.ts";
import { startGateway, type TestGateway } from "../support/gateway.ts";
import {
  bounded,
  chunk,
  closeAll,
  connect,
  eventually,
  type Frame,
  fromBase64,
  metricsText,
  metricValue,
  pcmChunks,
  sendChunks,
  sendStop,
  startVoice,
  stopVoice,
  toBase64,
  VOICE_ALIAS,
  VOICE_PRICE,
  voiceConfig,
  voiceStart,
  withVoiceSocket,
  type WsClient,
} from "./_voice_support.ts";
import { FakeRealtime, openaiProvider } from "./_fake_realtime.ts";

const round3 = (x: number) => Math.round(x * 1000) / 1000;
const REPLY_WORDS = 6;

/** Seconds of PCM16 in base64 chunks, from their sample counts at `rate`. */
const pcmSeconds = (chunks: string[], rate: number) =>
  chunks.reduce((s, b) => s + Math.floor(fromBase64(b).length / 2) / rate, 0);

/** Seconds of assistant audio in voice.audio frames, from their sample counts. */
const audioOutSeconds = (frames: Frame[]) =>
  frames.filter((f) => f.type === "voice.audio").reduce(
    (s, f) => s + fromBase64(f.bytes_base64).length / 2 / f.sample_rate,
    0,
  );

const costOf = (u: { in_tokens: number; out_tokens: number }) =>
  Math.round(
    ((u.in_tokens / 1e6) * VOICE_PRICE.input_per_1m +
      (u.out_tokens / 1e6) * VOICE_PRICE.output_per_1m) * 1e6,
  ) / 1e6;

/** The usage event of `requestId` on `sessionId`, once reported. */
const usageEvent = (gw: TestGateway, sessionId: string, requestId: string) =>
  eventually(
    () => gw.events.find((e) => e.request_id === `${sessionId}:${requestId}`),
    5_000,
    `usage event ${requestId}`,
  );

/** Neither usage events nor log lines hold audio: none of the sent chunks, no long base64. */
function assertNoRawAudio(gw: TestGateway, sent: string[], received: Frame[]) {
  const stored = JSON.stringify([gw.events, gw.logs]);
  for (const b of sent) assert.ok(!stored.includes(b.slice(0, 40)), "a sent chunk was stored");
  for (const f of received.filter((f) => f.type === "voice.audio")) {
    assert.ok(!stored.includes(f.bytes_base64.slice(0, 40)), "assistant audio was stored");
  }
  assert.doesNotMatch(stored, /[A-Za-z0-9+/]{120,}/, "something base64-like and long was stored");
}

Deno.test("voice push-to-talk pcm16 16 kHz: ready, transcripts, audio, turn, complete metered from samples", async () => {
  const claims = { tenant: "acme", user: "alice", mode: "managed" } as const;
  await withVoiceSocket(voiceConfig(), claims, async ({ gw, c, ready: session }) => {
    assert.equal(session.resumed, false);
    assert.match(session.session_id, /^wss_/);

    const ready = await startVoice(c, "v1");
    assert.equal(ready.provider, "rt-a");
    assert.equal(ready.mode, "push-to-talk");
    assert.deepEqual(ready.output, { codec: "pcm16", sample_rate: 24_000 });

    const chunks = sendChunks(c, "v1", 37); // 37 × 20 ms of real-time PCM at 16 kHz
    const complete = await stopVoice(c, "v1");

    const frames = c.since().filter((f) => f.request_id === "v1");
    assert.deepEqual(frames.map((f) => f.type), [
      "voice.ready",
      "voice.transcript",
      ...Array(REPLY_WORDS).fill(["voice.transcript", "voice.audio"]).flat(),
      "voice.turn",
      "voice.complete",
    ]);
    const sentSeconds = pcmSeconds(chunks, 16_000);
    assert.equal(round3(sentSeconds), 0.74);
    const [user, ...assistant] = frames.filter((f) => f.type === "voice.transcript");
    assert.equal(user.role, "user");
    assert.equal(user.text, `I heard ${sentSeconds.toFixed(1)} seconds of audio.`);
    assert.ok(assistant.every((f) => f.role === "assistant"));
    assert.equal(assistant.map((f) => f.text).join(""), "Hello from the Convergio demo voice.");
    for (const f of frames.filter((f) => f.type === "voice.audio")) {
      assert.equal(f.sample_rate, 24_000);
      assert.ok(fromBase64(f.bytes_base64).length > 0);
    }
    const turn = frames.find((f) => f.type === "voice.turn")!;
    assert.ok(turn.usage.input_tokens > 0);
    assert.equal(turn.usage.output_tokens, 30);

    const u = complete.usage;
    assert.equal(u.audio_in_s, round3(sentSeconds));
    assert.equal(u.audio_out_s, round3(audioOutSeconds(frames)));
    assert.equal(u.audio_out_s, 0.6);
    assert.equal(u.in_tokens, turn.usage.input_tokens);
    assert.equal(u.out_tokens, turn.usage.output_tokens);
    assert.equal(u.tool_calls, 0);
    assert.equal(u.cost_usd, costOf(u));
    assert.ok(u.cost_usd > 0);
    // every server frame carries increasing event ids and a timestamp
    const ids = c.frames.map((f) => f.event_id);
    assert.deepEqual(ids, [...ids].sort((a, b) => a - b));
    assert.ok(c.frames.every((f) => typeof f.timestamp_ms === "number"));

    const event = await usageEvent(gw, session.session_id, "v1");
    assert.equal(event.audio_seconds_in, round3(sentSeconds));
    assert.equal(event.audio_seconds_out, 0.6);
    assert.equal(event.input_tokens, u.in_tokens);
    assert.equal(event.output_tokens, 30);
    assert.equal(event.cost_usd, u.cost_usd);
    assert.ok(event.cost_usd > 0);
    assert.equal(event.provider, "rt-a");
    assert.equal(event.model, VOICE_ALIAS);
    assert.equal(event.session_id, session.session_id);
    assert.equal(event.tenant_id, "acme");
    assert.equal(event.user_id, "alice");
    assert.equal(event.mode, "managed");
    assert.equal(event.success, true);
    assert.equal(event.error_code, null);
    assert.equal(gw.events.filter((e) => e.request_id.endsWith(":v1")).length, 1);
    assertNoRawAudio(gw, chunks, frames);
  });
});

Deno.test("voice: metered from samples at the declared rate; a duration field is refused", async () => {
  await withVoiceSocket(voiceConfig(), {}, async ({ gw, c, ready }) => {
    // The client says 48 kHz (whatever it really recorded): 640 bytes are 320 samples at 48 kHz.
    await startVoice(c, "v1", { sample_rate: 48_000 });
    const chunks = sendChunks(c, "v1", 30);
    // A claimed duration is not part of the protocol.
    c.send({ ...chunk("v1", pcmChunks(1, 64_000)[0]), duration_ms: 1_000 });
    const refused = await c.nextOf("error");
    assert.equal(refused.code, "request.invalid");
    assert.equal(refused.request_id, "v1");
    assert.equal(refused.retryable, false);
    const complete = await stopVoice(c, "v1");
    const expected = round3(pcmSeconds(chunks, 48_000));
    assert.equal(expected, 0.2);
    assert.equal(complete.usage.audio_in_s, expected);
    const user = c.since().find((f) => f.type === "voice.transcript" && f.role === "user");
    assert.equal(user?.text, "I heard 0.2 seconds of audio.");
    assert.equal((await usageEvent(gw, ready.session_id, "v1")).audio_seconds_in, expected);
  });
});

Deno.test("voice opus: audio_in_s comes from each packet's TOC, not its size", async () => {
  await withVoiceSocket(voiceConfig(), {}, async ({ gw, c, ready }) => {
    await startVoice(c, "o1", { codec: "opus", sample_rate: 48_000 });
    const packet = (toc: number[], payload: number) => {
      const bytes = new Uint8Array(toc.length + payload);
      bytes.set(toc);
      for (let i = toc.length; i < bytes.length; i++) bytes[i] = (i * 7919) & 0xff;
      return toBase64(bytes);
    };
    const packets: Array<[string, number]> = [
      [packet([(1 << 3) | 0], 40), 20], // SILK NB 20 ms, one frame
      [packet([(31 << 3) | 1], 300), 40], // CELT FB 20 ms, two frames
      [packet([(3 << 3) | 3, 2], 5), 120], // SILK 60 ms × 2 (code 3 count)
      [packet([(16 << 3) | 0], 900), 2.5], // CELT NB 2.5 ms
      [packet([(16 << 3) | 0], 3), 2.5],
      [packet([(19 << 3) | 3, 10], 60), 120], // 10 × 20 ms, capped at 120 ms
      [packet([(13 << 3) | 2], 120), 40], // Hybrid 20 ms, code 2
    ];
    sendChunks(c, "o1", packets.map(([b]) => b));
    const complete = await stopVoice(c, "o1");
    const expected = round3(packets.reduce((sum, [, ms]) => sum + ms, 0) / 1000);
    assert.equal(expected, 0.345);
    assert.equal(complete.usage.audio_in_s, expected);
    assert.ok(c.since().some((f) => f.type === "voice.turn" && f.request_id === "o1"));
    assert.equal((await usageEvent(gw, ready.session_id, "o1")).audio_seconds_in, expected);
  });
});

Deno.test("voice vad mode (browser subprotocol auth): the provider takes the turn without voice.stop", async () => {
  await withVoiceSocket(voiceConfig(), {}, async ({ c }) => {
    assert.equal(c.socket.protocol, "convergio.v1");
    const ready = await startVoice(c, "v1", { mode: "vad" });
    assert.equal(ready.mode, "vad");
    const chunks = sendChunks(c, "v1", 60); // 1.2 s
    const user = await c.next((f) => f.type === "voice.transcript" && f.role === "user");
    assert.match(user.text, /^I heard 1\.0 seconds of audio\.$/);
    const turn = await c.nextOf("voice.turn", "v1");
    assert.ok(turn.usage.input_tokens >= 10);
    assert.ok(!c.since().some((f) => f.type === "voice.complete"), "no stop was sent yet");
    const complete = await stopVoice(c, "v1");
    assert.equal(complete.usage.audio_in_s, round3(pcmSeconds(chunks, 16_000)));
    assert.equal(complete.usage.audio_out_s, round3(audioOutSeconds(c.since())));
  }, { subprotocol: true });
});

Deno.test("voice max audio length: quota.exceeded, then the request completes and is metered", async () => {
  await withVoiceSocket(
    voiceConfig({ voice: { max_audio_seconds: 1 } }),
    {},
    async ({ gw, c, ready }) => {
      await startVoice(c, "v1");
      // As many 20 ms chunks as fit in 1 s (summed as the gateway sums them), plus one.
      let fit = 0;
      let sum = 0;
      while (sum + 0.02 <= 1) {
        sum += 0.02;
        fit++;
      }
      const chunks = sendChunks(c, "v1", fit + 1);
      const error = await c.nextOf("error", "v1");
      assert.equal(error.code, "quota.exceeded");
      assert.equal(error.retryable, false);
      assert.match(error.message, /max audio length of 1 s/);
      const complete = await c.nextOf("voice.complete", "v1");
      assert.equal(complete.usage.audio_in_s, round3(sum));
      assert.ok(complete.usage.audio_in_s <= 1);
      // the audio heard before the limit is still answered
      assert.ok(c.since().some((f) => f.type === "voice.turn"));
      const event = await usageEvent(gw, ready.session_id, "v1");
      assert.equal(event.audio_seconds_in, round3(sum));
      assert.ok(event.audio_seconds_out > 0);
      // the request is over: its chunks are refused, the socket still works
      c.send(chunk("v1", chunks[0]));
      assert.equal((await c.nextOf("error", "v1")).code, "request.invalid");
      await startVoice(c, "v2");
      await stopVoice(c, "v2");
    },
  );
});

Deno.test("voice managed lane at 110% of budget: voice.start gets budget.blocked; BYOK still talks", async () => {
  const gw = await startGateway(voiceConfig({
    extra: { tenant_defaults: { daily_budget_usd: 100, monthly_budget_usd: 1000 } },
  }));
  let managed: WsClient | undefined;
  let byok: WsClient | undefined;
  try {
    await gw.deps.edge!.store.setSpend({
      scope: "tenant",
      id: "acme",
      period: "day",
      bucket: periodsAt(Date.now()).day,
    }, 110_000_000);
    const s = await connect(gw, await gw.token({ tenant: "acme", mode: "managed" }));
    managed = s.c;
    managed.send(voiceStart("v1", { lane: "managed" }));
    const blocked = await managed.nextOf("error", "v1");
    assert.equal(blocked.code, "budget.blocked");
    assert.equal(blocked.retryable, false);
    assert.ok(!managed.since().some((f) => f.type === "voice.ready"), "no provider was opened");
    const event = await usageEvent(gw, s.ready.session_id, "v1");
    assert.equal(event.success, false);
    assert.equal(event.error_code, "budget.blocked");
    assert.equal(event.cost_usd, 0);
    assert.equal(event.model, VOICE_ALIAS);
    // the socket stays usable, and the request is no longer active
    managed.send(voiceStart("v2"));
    assert.equal((await managed.nextOf("error", "v2")).code, "budget.blocked");

    const b = await connect(gw, await gw.token({ tenant: "acme", mode: "byok" }));
    byok = b.c;
    await startVoice(byok, "v1");
    await stopVoice(byok, "v1");
  } finally {
    await closeAll(gw, managed, byok);
  }
});

Deno.test("voice rpm limit: the next voice.start gets quota.exceeded", async () => {
  await withVoiceSocket(voiceConfig({ extra: { tenant_defaults: { rpm: 1 } } }), {
    tenant: "acme",
    mode: "managed",
  }, async ({ gw, c, ready }) => {
    await startVoice(c, "v1");
    await stopVoice(c, "v1");
    c.send(voiceStart("v2"));
    const limited = await c.nextOf("error", "v2");
    assert.equal(limited.code, "quota.exceeded");
    assert.equal(limited.retryable, true);
    assert.match(limited.message, /rate limit/);
    const event = await usageEvent(gw, ready.session_id, "v2");
    assert.equal(event.error_code, "quota.exceeded");
  });
});

Deno.test("voice degraded (a): a text-only tenant is told so and answered in text; an off tenant is refused", async () => {
  const gw = await startGateway(voiceConfig(), {
    control: snapshot({
      flags: {
        voice_mode: {
          default: "on",
          overrides: { acme: "text-only", mute: "off" },
          canary: null,
          killed: false,
        },
      },
    }),
  });
  let c: WsClient | undefined;
  let off: WsClient | undefined;
  try {
    const s = await connect(gw, await gw.token({ tenant: "acme" }));
    c = s.c;
    c.send(voiceStart("v1"));
    const degraded = await c.nextOf("voice.degraded", "v1");
    assert.equal(degraded.mode, "text-only");
    assert.match(degraded.reason, /text-only/);
    assert.ok(!c.since().some((f) => f.type === "voice.ready"));

    c.send({ type: "voice.transcript", request_id: "t1", text: "What time is it?" });
    const done = await c.nextOf("chat.complete", "t1");
    const tokens = c.since().filter((f) => f.type === "chat.token" && f.request_id === "t1");
    assert.ok(tokens.length > 0);
    assert.ok(tokens.map((f) => f.text).join("").length > 0);
    assert.ok(done.usage.out_tokens > 0);
    assert.equal(done.usage.audio_in_s, 0);
    const event = await usageEvent(gw, s.ready.session_id, "t1");
    assert.equal(event.model, "convergio-demo");
    assert.equal(event.audio_seconds_in, 0);

    // chat.start works on a voice socket too
    c.send({ type: "chat.start", request_id: "c1", prompt: "hello" });
    await c.nextOf("chat.complete", "c1");

    // no voice request exists in text-only mode
    c.send(chunk("v1", pcmChunks(1)[0]));
    assert.equal((await c.nextOf("error", "v1")).code, "request.invalid");

    const o = await connect(gw, await gw.token({ tenant: "mute" }));
    off = o.c;
    off.send(voiceStart("v1"));
    const refused = await off.nextOf("error", "v1");
    assert.equal(refused.code, "feature.disabled");
    assert.equal(refused.retryable, false);
  } finally {
    await closeAll(gw, c, off);
  }
});

Deno.test("voice degraded (b): the first provider cannot connect, the second answers", async () => {
  await withVoiceSocket(
    voiceConfig({
      realtime: { "rt-a": { fail: "connect" }, "rt-b": {} },
    }),
    {},
    async ({ gw, c, ready: session }) => {
      const ready = await startVoice(c, "v1");
      assert.equal(ready.provider, "rt-b");
      assert.ok(!c.since().some((f) => f.type === "voice.degraded"));
      sendChunks(c, "v1", 10);
      const complete = await stopVoice(c, "v1");
      assert.equal(complete.usage.audio_in_s, 0.2);
      assert.equal((await usageEvent(gw, session.session_id, "v1")).provider, "rt-b");

      const metrics = await metricsText(gw);
      assert.equal(
        metricValue(metrics, "convergio_provider_failovers_total", {
          provider: "rt-a",
          deployment: "rt-a-model",
        }),
        1,
      );
      assert.equal(
        metricValue(metrics, "convergio_provider_attempts_total", {
          provider: "rt-a",
          outcome: "error",
        }),
        1,
      );
      assert.equal(
        metricValue(metrics, "convergio_provider_attempts_total", {
          provider: "rt-b",
          outcome: "ok",
        }),
        1,
      );
    },
  );
});

Deno.test("voice degraded (c): no voice provider → transcript-only, voice.transcript answered in text", async () => {
  await withVoiceSocket(
    voiceConfig({
      realtime: { "rt-a": { fail: "connect" }, "rt-b": { fail: "connect" } },
    }),
    {},
    async ({ gw, c, ready }) => {
      c.send(voiceStart("v1"));
      const degraded = await c.nextOf("voice.degraded", "v1");
      assert.equal(degraded.mode, "transcript-only");
      assert.match(degraded.reason, /voice\.transcript/);
      assert.ok(!c.since().some((f) => f.type === "voice.ready"));

      c.send({ type: "voice.transcript", request_id: "t1", text: "book a table for two" });
      await c.nextOf("chat.complete", "t1");
      assert.ok(c.since().some((f) => f.type === "chat.token" && f.request_id === "t1"));

      const complete = await stopVoice(c, "v1");
      assert.equal(complete.usage.audio_out_s, 0);
      assert.equal(complete.usage.cost_usd, 0);
      const event = await usageEvent(gw, ready.session_id, "v1");
      assert.equal(event.provider, null);

      const metrics = await metricsText(gw);
      assert.equal(
        metricValue(metrics, "convergio_provider_failovers_total", { provider: "rt-a" }),
        1,
      );
    },
  );
});

Deno.test("voice degraded (d): a mid-session failure fails over and the alternate takes the next turn", async () => {
  await withVoiceSocket(
    voiceConfig({
      realtime: { "rt-a": { fail: "midstream" }, "rt-b": {} },
    }),
    {},
    async ({ gw, c, ready }) => {
      c.send(voiceStart("v1", { mode: "vad" }));
      assert.equal((await c.nextOf("voice.ready", "v1")).provider, "rt-a");
      const first = sendChunks(c, "v1", 60);
      const failover = await c.nextOf("voice.degraded", "v1");
      assert.equal(failover.mode, "failover");
      assert.match(failover.reason, /mid-session/);
      const again = await c.nextOf("voice.ready", "v1");
      assert.equal(again.provider, "rt-b");
      const second = sendChunks(c, "v1", 60);
      const user = await c.next((f) => f.type === "voice.transcript" && f.role === "user");
      assert.match(user.text, /^I heard 1\.0 seconds/);
      await c.nextOf("voice.turn", "v1");
      const complete = await stopVoice(c, "v1");
      assert.equal(
        complete.usage.audio_in_s,
        round3(pcmSeconds(first, 16_000) + pcmSeconds(second, 16_000)),
      );
      assert.equal((await usageEvent(gw, ready.session_id, "v1")).provider, "rt-b");
    },
  );
});

Deno.test("voice degraded (d): a mid-session failure with no alternate → transcript-only", async () => {
  await withVoiceSocket(
    voiceConfig({ realtime: { "rt-a": { fail: "midstream" } } }),
    {},
    async ({ gw, c, ready }) => {
      await startVoice(c, "v1");
      sendChunks(c, "v1", 20);
      sendStop(c, "v1");
      assert.equal((await c.nextOf("voice.degraded", "v1")).mode, "failover");
      assert.equal((await c.nextOf("voice.degraded", "v1")).mode, "transcript-only");
      const complete = await c.nextOf("voice.complete", "v1");
      assert.equal(complete.usage.audio_in_s, 0.4);
      assert.ok(!c.since().some((f) => f.type === "voice.turn"));
      c.send({ type: "voice.transcript", request_id: "t1", text: "say it in text then" });
      await c.nextOf("chat.complete", "t1");
      assert.equal((await usageEvent(gw, ready.session_id, "v1")).audio_seconds_in, 0.4);
    },
  );
});

Deno.test("voice degraded (e): on the 3rd reconnect of one session the server advises text-only", async () => {
  const gw = await startGateway(voiceConfig());
  const clients: WsClient[] = [];
  try {
    const token = await gw.token();
    const first = await connect(gw, token);
    clients.push(first.c);
    const sessionId = first.ready.session_id;
    let last = first.c;
    for (let reconnect = 1; reconnect <= 3; reconnect++) {
      // drop abruptly (not 1000): the session waits for a resume
      const closed = await last.close(4000);
      assert.equal(closed?.code, 4000);
      const lastEventId = last.frames[last.frames.length - 1].event_id;
      const next = await connect(gw, token, {
        query: { session_id: sessionId, last_event_id: String(lastEventId) },
      });
      clients.push(next.c);
      assert.equal(next.ready.session_id, sessionId);
      assert.equal(next.ready.resumed, true);
      assert.equal(next.ready.frames_lost, undefined);
      // whatever the server says right after ready comes before the answer to this probe
      next.c.send({ type: "voice.stop", request_id: `probe${reconnect}` });
      await next.c.nextOf("error", `probe${reconnect}`);
      const degraded = next.c.since().filter((f) => f.type === "voice.degraded");
      if (reconnect < 3) {
        assert.deepEqual(degraded, [], `no advice after ${reconnect} reconnects`);
      } else {
        assert.equal(degraded.length, 1);
        assert.equal(degraded[0].mode, "text-only");
        assert.match(degraded[0].reason, /reconnected 3 times/);
        // it follows session.ready directly
        const at = next.c.frames.indexOf(degraded[0]);
        assert.equal(next.c.frames[at - 1].type, "session.ready");
      }
      last = next.c;
    }
    const metrics = await metricsText(gw);
    assert.equal(
      metricValue(metrics, "convergio_ws_reconnect_attempts_total", { kind: "voice" }),
      3,
    );
    assert.equal(
      metricValue(metrics, "convergio_ws_dropouts_total", { kind: "voice", reason: "4000" }),
      3,
    );
    assert.equal(metricValue(metrics, "convergio_ws_sessions_total", { kind: "voice" }), 1);
  } finally {
    await closeAll(gw, ...clients);
  }
});

Deno.test("voice metrics after traffic: connect time, sessions, audio seconds, ws-voice TTFT", async () => {
  await withVoiceSocket(voiceConfig(), {}, async ({ gw, c }) => {
    await startVoice(c, "v1");
    const chunks = sendChunks(c, "v1", 25);
    const complete = await stopVoice(c, "v1");

    const res = await fetch(`${gw.url}/metrics`);
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.ok(
      (metricValue(text, "convergio_ws_connect_seconds_count", { kind: "voice" }) ?? 0) >= 1,
    );
    assert.ok(
      (metricValue(text, "convergio_ws_connect_seconds_bucket", { kind: "voice", le: "+Inf" }) ??
        0) >= 1,
    );
    assert.equal(metricValue(text, "convergio_ws_sessions_total", { kind: "voice" }), 1);
    const audioIn = metricValue(text, "convergio_voice_audio_seconds_total", { direction: "in" });
    const audioOut = metricValue(text, "convergio_voice_audio_seconds_total", {
      direction: "out",
    });
    assert.ok(Math.abs(audioIn! - pcmSeconds(chunks, 16_000)) < 1e-9, `in: ${audioIn}`);
    assert.ok(Math.abs(audioOut! - complete.usage.audio_out_s) < 1e-9, `out: ${audioOut}`);
    assert.equal(
      metricValue(text, "gen_ai_server_time_to_first_token_seconds_count", {
        transport: "ws-voice",
        gen_ai_provider_name: "rt-a",
        gen_ai_request_model: VOICE_ALIAS,
      }),
      1,
    );
  });
});

Deno.test("voice invalid frames: each gets request.invalid and the socket stays usable", async () => {
  await withVoiceSocket(voiceConfig(), { mode: "byok" }, async ({ gw, c, ready }) => {
    const expectInvalid = async (frame: unknown, requestId?: string, message?: RegExp) => {
      c!.send(frame as Record<string, unknown>);
      const err = await c!.next(
        (f) => f.type === "error",
        5_000,
        `error for ${JSON.stringify(frame)}`,
      );
      assert.equal(err.code, "request.invalid", JSON.stringify(err));
      assert.equal(err.retryable, false);
      if (requestId) assert.equal(err.request_id, requestId);
      if (message) assert.match(err.message, message);
      return err;
    };

    // chunk and stop without a voice.start
    await expectInvalid(chunk("nope", pcmChunks(1)[0]), "nope", /no active voice request/);
    await expectInvalid({ type: "voice.stop", request_id: "nope" }, "nope");
    // bad codec, bad rate, bad mode, missing fields, unknown type, not JSON
    await expectInvalid(voiceStart("b1", { codec: "mp3" }), "b1", /codec/);
    await expectInvalid(voiceStart("b2", { sample_rate: 44_100 }), "b2", /sample_rate/);
    await expectInvalid(voiceStart("b3", { sample_rate: "16000" }), "b3");
    await expectInvalid(voiceStart("b4", { mode: "always-on" }), "b4", /mode/);
    await expectInvalid({ type: "voice.start", request_id: "b5" }, "b5");
    await expectInvalid({ type: "voice.dance", request_id: "b6" }, "b6", /unknown frame type/);
    await expectInvalid("{nope", undefined, /JSON/);
    // a lane the token is not for
    await expectInvalid(voiceStart("b7", { lane: "managed" }), "b7", /lane/);
    await eventually(
      () => gw.events.find((e) => e.request_id === `${ready.session_id}:b7`),
      5_000,
      "b7 metered",
    );

    // one voice request at a time
    await startVoice(c, "v1");
    await expectInvalid(voiceStart("v2"), "v2", /already active/);
    // chunks for another request id, chunks that are not base64
    await expectInvalid(chunk("v2", pcmChunks(1)[0]), "v2");
    await expectInvalid(chunk("v1", "not base64!"), "v1", /base64/);
    await expectInvalid({ type: "voice.chunk", request_id: "v1", bytes_base64: "" }, "v1");
    await expectInvalid({ type: "voice.transcript", request_id: "t1", text: "" }, "t1");

    // still usable: the active request runs to completion
    sendChunks(c, "v1", 5);
    const complete = await stopVoice(c, "v1");
    assert.equal(complete.usage.audio_in_s, 0.1);
    assert.ok(!c.since().some((f) => f.type === "voice.ready" && f.request_id === "v2"));
    // and a new request can start after it
    await startVoice(c, "v3", { codec: "opus", sample_rate: 48_000 });
    await stopVoice(c, "v3");
    assert.equal(c.socket.readyState, WebSocket.OPEN);
  });
});

Deno.test("voice socket: no token, a bad token or a foreign subprotocol is refused before upgrade", async () => {
  const gw = await startGateway(voiceConfig());
  try {
    const url = `${gw.url.replace(/^http/, "ws")}/v1/voice/ws`;
    const refused = async (socket: WebSocket) => {
      const outcome = await bounded(
        new Promise<string>((r) => {
          socket.onopen = () => r("open");
          socket.onerror = () => r("error");
        }),
      );
      if (socket.readyState !== WebSocket.CLOSED) {
        socket.close();
        await bounded(new Promise((r) => socket.addEventListener("close", r, { once: true })));
      }
      return outcome;
    };
    assert.equal(await refused(new WebSocket(url)), "error");
    assert.equal(await refused(new WebSocket(url, ["convergio.v1", "bearer.not-a-jwt"])), "error");
    assert.equal(
      await refused(new WebSocket(url, ["other.v1", `bearer.${await gw.token()}`])),
      "error",
    );
    const plain = await fetch(`${gw.url}/v1/voice/ws`, {
      headers: { authorization: `Bearer ${await gw.token()}` },
    });
    assert.equal(plain.status, 426);
    await plain.body?.cancel();
  } finally {
    await gw.close();
  }
});

Deno.test("voice through the OpenAI Realtime wire: key from config, 16 kHz resampled to 24 kHz, mapped frames", async () => {
  const fake = new FakeRealtime({ apiKey: "sk-from-config" });
  const config = voiceConfig({ realtime: { "rt-openai": openaiProvider(fake) } });
  try {
    await withVoiceSocket(
      config,
      { tenant: "acme", mode: "managed" },
      async ({ gw, c, ready: session }) => {
        const ready = await startVoice(c, "v1");
        assert.equal(ready.provider, "rt-openai");
        assert.deepEqual(fake.upgrades, [{
          auth: "Bearer sk-from-config",
          beta: "realtime=v1",
          model: "rt-openai-model",
        }]);
        const update = await fake.sent("session.update");
        assert.equal((update.session as Record<string, unknown>).turn_detection, null);

        sendChunks(c, "v1", 10); // 10 × 320 samples at 16 kHz
        const complete = await stopVoice(c, "v1");
        // the provider got 24 kHz: 480 samples per 20 ms chunk
        assert.equal(fake.appended.length, 10);
        assert.ok(fake.appended.every((a) => a.length === 960));
        assert.equal(fake.count("input_audio_buffer.commit"), 1);
        assert.equal(fake.count("response.create"), 1);

        const frames = c.since().filter((f) => f.request_id === "v1");
        const transcripts = frames.filter((f) => f.type === "voice.transcript");
        assert.deepEqual(transcripts.map((f) => [f.role, f.text]), [
          ["user", "What is the weather?"],
          ["assistant", "It is "],
          ["assistant", "sunny."],
        ]);
        const audio = frames.filter((f) => f.type === "voice.audio");
        assert.equal(audio.length, 2);
        assert.deepEqual(fromBase64(audio[0].bytes_base64), fake.replyAudio);
        assert.deepEqual(frames.find((f) => f.type === "voice.turn")?.usage, {
          input_tokens: 42,
          output_tokens: 15,
        });
        assert.equal(complete.usage.audio_in_s, 0.2);
        assert.equal(complete.usage.audio_out_s, 0.2);
        assert.equal(complete.usage.in_tokens, 42);
        assert.equal(complete.usage.out_tokens, 15);
        assert.equal(complete.usage.cost_usd, costOf(complete.usage));
        const event = await usageEvent(gw, session.session_id, "v1");
        assert.equal(event.provider, "rt-openai");
        assert.equal(event.cost_usd, complete.usage.cost_usd);
        // the request's end closes the provider socket normally
        await fake.until(() => fake.closes.length === 1, "provider socket closed");
        assert.deepEqual(fake.closes, [1000]);
      },
    );
  } finally {
    await fake.close();
  }
});

Deno.test("voice through the OpenAI Realtime wire: BYOK uses the tenant's key; vad asks for server_vad", async () => {
  const fake = new FakeRealtime({ apiKey: "sk-tenant-own" });
  const config = voiceConfig({
    realtime: { "rt-openai": openaiProvider(fake, "sk-house") },
    extra: { tenants: { acme: { byok_keys: { "rt-openai": "sk-tenant-own" } } } },
  });
  try {
    await withVoiceSocket(config, { tenant: "acme", mode: "byok" }, async ({ c }) => {
      await startVoice(c, "v1", { mode: "vad", sample_rate: 24_000 });
      assert.equal(fake.upgrades[0].auth, "Bearer sk-tenant-own");
      const update = await fake.sent("session.update");
      assert.deepEqual((update.session as Record<string, unknown>).turn_detection, {
        type: "server_vad",
      });
      const chunks = sendChunks(c, "v1", pcmChunks(3, 960));
      await fake.until(() => fake.appended.length === 3, "appends");
      // 24 kHz in, 24 kHz to the provider: passed through untouched
      assert.deepEqual(fake.appended.map(toBase64), chunks);
      const complete = await stopVoice(c, "v1");
      assert.equal(complete.usage.audio_in_s, 0.06);
    });
  } finally {
    await fake.close();
  }
});

Deno.test("voice.transcript may not reuse the active voice request's request_id; that request is still settled", async () => {
  await withVoiceSocket(voiceConfig(), {}, async ({ gw, c, ready }) => {
    await startVoice(c, "v1");
    sendChunks(c, "v1", 10);
    c.send({ type: "voice.transcript", request_id: "v1", text: "hello" });
    const answer = await c.next(
      (f) => f.request_id === "v1" && (f.type === "error" || f.type === "chat.complete"),
      5_000,
      "an answer to voice.transcript v1",
    );
    assert.equal(answer.type, "error", "no chat may run under the voice request's id");
    assert.equal(answer.code, "request.invalid");
    await c.close(); // a clean goodbye ends the session and whatever is in flight
    const events = await eventually(
      () => {
        const mine = gw.events.filter((e) => e.request_id === `${ready.session_id}:v1`);
        return mine.length ? mine : undefined;
      },
      5_000,
      "voice usage event",
    );
    // exactly one event for the id: the voice request's, with its audio
    assert.equal(events.length, 1);
    const voiceEvent = events[0];
    assert.equal(voiceEvent.model, VOICE_ALIAS);
    assert.equal(voiceEvent.audio_seconds_in, 0.2);
  });
});

Deno.test("voice.transcript obeys ws.max_inflight like chat.start", async () => {
  // a chat provider slow enough that the first request is still in flight
  const config = voiceConfig({
    chat: { first_token_ms: 300 },
    extra: { ws: { max_inflight: 1 } },
  });
  await withVoiceSocket(config, {}, async ({ c }) => {
    const client = c;
    const settled = (id: string) =>
      eventually(
        () =>
          client.frames.find((f) => f.request_id === id && /^(error|chat\.complete)$/.test(f.type)),
        5_000,
        `${id} settled`,
      );
    const firstOf = (id: string) => client.frames.find((f) => f.request_id === id)!;
    // control: chat.start is limited
    c.send({ type: "chat.start", request_id: "c1", prompt: "a long answer please" });
    c.send({ type: "chat.start", request_id: "c2", prompt: "and another" });
    await settled("c1");
    await settled("c2");
    assert.equal(firstOf("c2").type, "error", "control: chat.start is limited");
    assert.equal(firstOf("c2").code, "quota.exceeded");
    // the same through voice.transcript
    c.send({ type: "voice.transcript", request_id: "t1", text: "a long answer please" });
    c.send({ type: "voice.transcript", request_id: "t2", text: "and another" });
    await settled("t1");
    await settled("t2");
    assert.equal(firstOf("t2").type, "error", "voice.transcript ran past ws.max_inflight");
    assert.equal(firstOf("t2").code, "quota.exceeded");
  });
});
