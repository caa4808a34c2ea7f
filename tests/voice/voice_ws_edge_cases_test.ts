/**
 * Voice socket behaviours that the current src/voice/voice_socket.ts gets
 * wrong (see the report that added this file). Each test states the expected
 * behaviour; the ones that leave a 30 s grace timer behind when they fail
 * turn the op sanitizer off so that the failure reported is the behaviour.
 */
import assert from "node:assert/strict";
import { startGateway } from "../support/gateway.ts";
import { FakeRealtime, openaiProvider } from "./_fake_realtime.ts";
import {
  closeAll,
  connect,
  eventually,
  metricsText,
  metricValue,
  sendChunks,
  sendStop,
  startVoice,
  stopVoice,
  VOICE_ALIAS,
  voiceConfig,
  voiceStart,
  withVoiceSocket,
  type WsClient,
} from "./_voice_support.ts";

Deno.test({
  name:
    "BUG voice: push-to-talk stop pending when the provider fails over: voice.complete must not wait the 30 s grace",
  sanitizeOps: false,
  async fn() {
    const config = voiceConfig({ realtime: { "rt-a": { fail: "midstream" }, "rt-b": {} } });
    await withVoiceSocket(config, {}, async ({ c }) => {
      await startVoice(c, "v1");
      sendChunks(c, "v1", 20);
      sendStop(c, "v1");
      assert.equal((await c.nextOf("voice.degraded", "v1")).mode, "failover");
      assert.equal((await c.nextOf("voice.ready", "v1")).provider, "rt-b");
      // The alternate never heard the caller's turn and the caller has stopped:
      // nothing can answer it, so the request should end now (today: after 30 s).
      const complete = await c.nextOf("voice.complete", "v1", 5_000);
      assert.equal(complete.usage.audio_in_s, 0.4);
    });
  },
});

Deno.test({
  name:
    "BUG voice: chunks past max_audio_seconds get one quota.exceeded, not one per chunk (and one stop)",
  sanitizeOps: false,
  async fn() {
    const config = voiceConfig({
      realtime: { "rt-a": { first_audio_ms: 200 } },
      voice: { max_audio_seconds: 1 },
    });
    await withVoiceSocket(config, {}, async ({ c }) => {
      await startVoice(c, "v1");
      sendChunks(c, "v1", 60); // 1.2 s: 10 chunks over
      await c.nextOf("voice.complete", "v1", 5_000);
      const quota = c.since().filter((f) =>
        f.type === "error" && f.request_id === "v1" && f.code === "quota.exceeded"
      );
      assert.equal(quota.length, 1, `${quota.length} quota.exceeded errors for one request`);
    });
  },
});

Deno.test({
  name: "BUG voice: a repeated voice.stop commits once upstream (one billed response.create)",
  sanitizeOps: false,
  async fn() {
    const timers = new Set<ReturnType<typeof setTimeout>>();
    const fake = new FakeRealtime({
      onResponse(socket, fake) {
        // a provider that takes a moment to answer
        const t = setTimeout(() => {
          timers.delete(t);
          if (socket.readyState === WebSocket.OPEN) {
            socket.send(JSON.stringify({ type: "response.done", response: { usage: {} } }));
          }
        }, 200);
        timers.add(t);
        void fake;
      },
    });
    const config = voiceConfig({ realtime: { "rt-openai": openaiProvider(fake) } });
    try {
      await withVoiceSocket(config, { mode: "managed" }, async ({ c }) => {
        await startVoice(c, "v1");
        sendChunks(c, "v1", 10);
        sendStop(c, "v1");
        sendStop(c, "v1"); // a double click
        await c.nextOf("voice.complete", "v1", 5_000);
        assert.equal(fake.count("input_audio_buffer.commit"), 1);
        assert.equal(fake.count("response.create"), 1);
      });
    } finally {
      for (const t of timers) clearTimeout(t);
      await fake.close();
    }
  },
});

Deno.test("BUG voice: a chunk whose base64 does not decode gets request.invalid for its request", async () => {
  await withVoiceSocket(voiceConfig(), {}, async ({ c }) => {
    await startVoice(c, "v1");
    // passes the frame's /^[A-Za-z0-9+/]+={0,2}$/ check, but atob() rejects it
    for (const bad of ["A", "AAAAA", "AA=A"]) {
      sendChunks(c, "v1", [bad]);
      const err = await c.nextOf("error");
      assert.deepEqual(
        { code: err.code, request_id: err.request_id, retryable: err.retryable },
        { code: "request.invalid", request_id: "v1", retryable: false },
        JSON.stringify(err),
      );
    }
    // the request and the socket carry on
    sendChunks(c, "v1", 5);
    assert.equal((await stopVoice(c, "v1")).usage.audio_in_s, 0.1);
  });
});

/** A provider endpoint that accepts TCP connections and never answers the WebSocket handshake. */
function silentEndpoint() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const accepting = (async () => {
    try {
      for await (const conn of listener) conns.push(conn);
    } catch { /* closed */ }
  })();
  return {
    url: `ws://127.0.0.1:${listener.addr.port}/v1/realtime`,
    conns,
    async close() {
      for (const conn of conns) {
        try {
          conn.close();
        } catch { /* already closed */ }
      }
      listener.close();
      await accepting;
    },
  };
}

Deno.test("BUG voice: a caller who hangs up during the provider handshake leaves no session at the alternate provider", async () => {
  const slow = silentEndpoint();
  const alt = new FakeRealtime();
  const gw = await startGateway(voiceConfig({
    realtime: {
      "rt-slow": openaiProvider(slow, "sk-slow"),
      "rt-alt": openaiProvider(alt),
    },
  }));
  let c: WsClient | undefined;
  try {
    const s = await connect(gw, await gw.token({ mode: "managed" }));
    c = s.c;
    c.send(voiceStart("v1"));
    await eventually(() => slow.conns.length || undefined, 5_000, "first provider handshake");
    await c.close(); // the caller hangs up before the first provider answered
    c = undefined;
    const event = await eventually(
      () => gw.events.find((e) => e.request_id === `${s.ready.session_id}:v1`),
      5_000,
      "the cancelled request's usage event",
    );
    assert.equal(event.success, false);
    // let the gateway settle what it had started, then look upstream
    await new Promise((r) => setTimeout(r, 500));
    // The request is over: no provider session may outlive it. Today the
    // aborted first attempt counts as a provider failure, the gateway fails
    // over to rt-alt with the already-aborted signal, opens a session there
    // and never closes it.
    await alt.until(
      () => alt.closes.length === alt.sockets.length,
      `every session opened at the alternate provider is closed (opened ${alt.sockets.length})`,
    );
  } finally {
    await closeAll(gw, c);
    await slow.close();
    await alt.close();
  }
});

Deno.test("BUG voice: BYOK without a tenant key for the realtime provider is byok.missing_key", async () => {
  const fake = new FakeRealtime();
  const config = voiceConfig({ realtime: { "rt-openai": openaiProvider(fake) } });
  try {
    await withVoiceSocket(config, { tenant: "nokey", mode: "byok" }, async ({ c }) => {
      c.send(voiceStart("v1"));
      const first = await c.next(
        (f) => f.request_id === "v1" && f.type !== "voice.ready",
        5_000,
        "answer to voice.start",
      );
      // like chat: the tenant is told its key is missing, and no anonymous call goes upstream
      assert.deepEqual(
        { type: first.type, code: first.code },
        { type: "error", code: "byok.missing_key" },
        JSON.stringify(first),
      );
      assert.deepEqual(fake.upgrades, []);
    });
  } finally {
    await fake.close();
  }
});

Deno.test("BUG voice: output tokens are observed in gen_ai_client_token_usage like input tokens", async () => {
  await withVoiceSocket(voiceConfig(), {}, async ({ gw, c }) => {
    await startVoice(c, "v1");
    sendChunks(c, "v1", 10);
    const complete = await stopVoice(c, "v1");
    const text = await metricsText(gw);
    const labels = { gen_ai_request_model: VOICE_ALIAS, gen_ai_provider_name: "rt-a" };
    assert.equal(
      metricValue(text, "gen_ai_client_token_usage_sum", { ...labels, gen_ai_token_type: "input" }),
      complete.usage.in_tokens,
    );
    assert.equal(
      metricValue(text, "gen_ai_client_token_usage_sum", {
        ...labels,
        gen_ai_token_type: "output",
      }),
      complete.usage.out_tokens,
    );
  });
});
