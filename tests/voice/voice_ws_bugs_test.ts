/**
 * Voice socket behaviours that the current src/voice/voice_socket.ts gets
 * wrong (see the report that added this file). Each test states the expected
 * behaviour; the ones that leave a 30 s grace timer behind when they fail
 * turn the op sanitizer off so that the failure reported is the behaviour.
 */
import assert from "node:assert/strict";
import { startGateway, type TestGateway } from "../support/gateway.ts";
import { FakeRealtime } from "./_fake_realtime.ts";
import {
  eventually,
  type Frame,
  metricValue,
  pcmChunks,
  VOICE_ALIAS,
  voiceConfig,
  WsClient,
} from "./_voice_support.ts";

const voiceStart = (requestId: string, extra: Record<string, unknown> = {}) => ({
  type: "voice.start",
  request_id: requestId,
  codec: "pcm16",
  sample_rate: 16_000,
  mode: "push-to-talk",
  ...extra,
});
const chunk = (requestId: string, bytes_base64: string) => ({
  type: "voice.chunk",
  request_id: requestId,
  bytes_base64,
});

async function connect(gw: TestGateway, token: string): Promise<{ c: WsClient; ready: Frame }> {
  const c = await WsClient.connect(gw, token);
  return { c, ready: await c.nextOf("session.ready") };
}

async function closeAll(gw: TestGateway, ...clients: Array<WsClient | undefined>) {
  for (const c of clients) await c?.close().catch(() => {});
  await gw.close();
}

Deno.test({
  name:
    "BUG voice: push-to-talk stop pending when the provider fails over: voice.complete must not wait the 30 s grace",
  sanitizeOps: false,
  async fn() {
    const gw = await startGateway(voiceConfig({
      realtime: { "rt-a": { fail: "midstream" }, "rt-b": {} },
    }));
    let c: WsClient | undefined;
    try {
      c = (await connect(gw, await gw.token())).c;
      c.send(voiceStart("v1"));
      await c.nextOf("voice.ready", "v1");
      for (const b of pcmChunks(20)) c.send(chunk("v1", b));
      c.send({ type: "voice.stop", request_id: "v1" });
      assert.equal((await c.nextOf("voice.degraded", "v1")).mode, "failover");
      assert.equal((await c.nextOf("voice.ready", "v1")).provider, "rt-b");
      // The alternate never heard the caller's turn and the caller has stopped:
      // nothing can answer it, so the request should end now (today: after 30 s).
      const complete = await c.nextOf("voice.complete", "v1", 5_000);
      assert.equal(complete.usage.audio_in_s, 0.4);
    } finally {
      await closeAll(gw, c);
    }
  },
});

Deno.test({
  name:
    "BUG voice: chunks past max_audio_seconds get one quota.exceeded, not one per chunk (and one stop)",
  sanitizeOps: false,
  async fn() {
    const gw = await startGateway(voiceConfig({
      realtime: { "rt-a": { first_audio_ms: 200 } },
      voice: { max_audio_seconds: 1 },
    }));
    let c: WsClient | undefined;
    try {
      c = (await connect(gw, await gw.token())).c;
      c.send(voiceStart("v1"));
      await c.nextOf("voice.ready", "v1");
      for (const b of pcmChunks(60)) c.send(chunk("v1", b)); // 1.2 s: 10 chunks over
      await c.nextOf("voice.complete", "v1", 5_000);
      const quota = c.since().filter((f) =>
        f.type === "error" && f.request_id === "v1" && f.code === "quota.exceeded"
      );
      assert.equal(quota.length, 1, `${quota.length} quota.exceeded errors for one request`);
    } finally {
      await closeAll(gw, c);
    }
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
    const gw = await startGateway(voiceConfig({
      realtime: {
        "rt-openai": { protocol: "realtime_openai", base_url: fake.url, api_key: fake.apiKey },
      },
    }));
    let c: WsClient | undefined;
    try {
      c = (await connect(gw, await gw.token({ mode: "managed" }))).c;
      c.send(voiceStart("v1"));
      await c.nextOf("voice.ready", "v1");
      for (const b of pcmChunks(10)) c.send(chunk("v1", b));
      c.send({ type: "voice.stop", request_id: "v1" });
      c.send({ type: "voice.stop", request_id: "v1" }); // a double click
      await c.nextOf("voice.complete", "v1", 5_000);
      assert.equal(fake.count("input_audio_buffer.commit"), 1);
      assert.equal(fake.count("response.create"), 1);
    } finally {
      for (const t of timers) clearTimeout(t);
      await closeAll(gw, c);
      await fake.close();
    }
  },
});

Deno.test("BUG voice: voice.transcript may not reuse the request_id of the active voice request", async () => {
  const gw = await startGateway(voiceConfig());
  let c: WsClient | undefined;
  try {
    const s = await connect(gw, await gw.token());
    c = s.c;
    c.send(voiceStart("v1"));
    await c.nextOf("voice.ready", "v1");
    for (const b of pcmChunks(10)) c.send(chunk("v1", b));
    c.send({ type: "voice.transcript", request_id: "v1", text: "hello" });
    const answer = await c.next(
      (f) => f.request_id === "v1" && (f.type === "error" || f.type === "chat.complete"),
      5_000,
      "an answer to voice.transcript v1",
    );
    await c.close(); // a clean goodbye ends the session and whatever is in flight
    c = undefined;
    const voiceEvent = await eventually(
      () =>
        gw.events.find((e) =>
          e.request_id === `${s.ready.session_id}:v1` && e.model === VOICE_ALIAS
        ) ?? null,
      2_000,
      "voice usage event",
    ).catch(() => undefined);
    assert.equal(answer.type, "error", "the chat ran under the voice request's id");
    assert.equal(answer.code, "request.invalid");
    assert.ok(voiceEvent, "the voice request was never settled: its audio is not metered");
    assert.equal(voiceEvent.audio_seconds_in, 0.2);
  } finally {
    await closeAll(gw, c);
  }
});

Deno.test("BUG voice: voice.transcript obeys ws.max_inflight like chat.start", async () => {
  // a chat provider slow enough that the first request is still in flight
  const gw = await startGateway(voiceConfig({
    chat: { first_token_ms: 300 },
    extra: { ws: { max_inflight: 1 } },
  }));
  let c: WsClient | undefined;
  try {
    c = (await connect(gw, await gw.token())).c;
    // control: chat.start is limited
    c.send({ type: "chat.start", request_id: "c1", prompt: "a long answer please" });
    c.send({ type: "chat.start", request_id: "c2", prompt: "and another" });
    const c2 = await c.next((f) => f.request_id === "c2", 5_000, "answer to c2");
    await c.nextOf("chat.complete", "c1");
    // the same through voice.transcript
    c.send({ type: "voice.transcript", request_id: "t1", text: "a long answer please" });
    c.send({ type: "voice.transcript", request_id: "t2", text: "and another" });
    const t2 = await c.next(
      (f) => f.request_id === "t2" && (f.type === "error" || f.type === "chat.token"),
      5_000,
      "answer to t2",
    );
    await c.nextOf("chat.complete", "t1");
    await c.next((f) => f.request_id === "t2" && f.type !== "chat.token", 5_000, "t2 settled");
    assert.equal(c2.type, "error", "control: chat.start is limited");
    assert.equal(c2.code, "quota.exceeded");
    assert.equal(t2.type, "error", "voice.transcript ran past ws.max_inflight");
    assert.equal(t2.code, "quota.exceeded");
  } finally {
    await closeAll(gw, c);
  }
});

Deno.test("BUG voice: a socket that ends while the provider handshake is pending leaves no upstream session", async () => {
  let release!: () => void;
  const fake = new FakeRealtime({ holdUpgrade: new Promise<void>((r) => (release = r)) });
  const gw = await startGateway(voiceConfig({
    realtime: {
      "rt-openai": { protocol: "realtime_openai", base_url: fake.url, api_key: fake.apiKey },
    },
  }));
  let c: WsClient | undefined;
  try {
    const s = await connect(gw, await gw.token({ mode: "managed" }));
    c = s.c;
    c.send(voiceStart("v1"));
    await fake.until(() => fake.upgrades.length === 1, "provider handshake started");
    await c.close(); // the caller hangs up before the provider answered
    c = undefined;
    await eventually(
      () => gw.events.find((e) => e.request_id === `${s.ready.session_id}:v1`),
      5_000,
      "the cancelled request's usage event",
    );
    release();
    await fake.until(() => fake.sockets.length === 1, "provider socket opened");
    // the request is over: the gateway must hang up on the provider (today it never does)
    await fake.until(() => fake.closes.length === 1, "provider socket closed by the gateway");
  } finally {
    release?.();
    await closeAll(gw, c);
    await fake.close();
  }
});

Deno.test("BUG voice: BYOK without a tenant key for the realtime provider is byok.missing_key", async () => {
  const fake = new FakeRealtime();
  const gw = await startGateway(voiceConfig({
    realtime: {
      "rt-openai": { protocol: "realtime_openai", base_url: fake.url, api_key: fake.apiKey },
    },
  }));
  let c: WsClient | undefined;
  try {
    c = (await connect(gw, await gw.token({ tenant: "nokey", mode: "byok" }))).c;
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
  } finally {
    await closeAll(gw, c);
    await fake.close();
  }
});

Deno.test("BUG voice: output tokens are observed in gen_ai_client_token_usage like input tokens", async () => {
  const gw = await startGateway(voiceConfig());
  let c: WsClient | undefined;
  try {
    c = (await connect(gw, await gw.token())).c;
    c.send(voiceStart("v1"));
    await c.nextOf("voice.ready", "v1");
    for (const b of pcmChunks(10)) c.send(chunk("v1", b));
    c.send({ type: "voice.stop", request_id: "v1" });
    const complete = await c.nextOf("voice.complete", "v1");
    const text = await (await fetch(`${gw.url}/metrics`)).text();
    const labels = { gen_ai_request_model: VOICE_ALIAS, gen_ai_provider_name: "rt-a" };
    assert.equal(
      metricValue(text, "gen_ai_client_token_usage_sum", { ...labels, gen_ai_token_type: "input" }),
      complete.usage.in_tokens,
    );
    assert.equal(
      metricValue(text, "gen_ai_client_token_usage_sum", { ...labels, gen_ai_token_type: "output" }),
      complete.usage.out_tokens,
    );
  } finally {
    await closeAll(gw, c);
  }
});
