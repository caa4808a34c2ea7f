import assert from "node:assert/strict";
import { periodsAt, requestScopes, type SpendScope } from "../../src/budget/store.ts";
import { testConfig } from "../support/gateway.ts";
import {
  answer,
  assertError,
  assertExpired,
  assertIncreasing,
  assertRefused,
  detached,
  eventually,
  failedEvent,
  metric,
  requestLog,
  sessionsEnded,
  slow,
  SUBPROTOCOL,
  tokenText,
  USAGE_KEYS,
  usageEvent,
  waitForEvent,
  withGateway,
  withSocket,
  WsClient,
} from "./_ws_client.ts";

/** End-to-end tests of `GET /v1/ws`: a real server on a free port and real WebSocket clients. */

const chatMetric = (gw: Parameters<typeof metric>[0], name: string, reason?: string) =>
  metric(gw, `convergio_ws_${name}_total`, { kind: "chat", ...(reason ? { reason } : {}) });

// ---------------------------------------------------------------------------------------------
// Happy path and authentication

Deno.test("ws chat: tokens, chat.complete with usage, increasing event ids, usage event and log", async () => {
  await withSocket(undefined, async ({ gw, c, ready, sid }) => {
    assert.equal(c.frames[0], ready, "session.ready is the first frame");
    assert.match(String(ready.session_id), /^wss_[0-9a-f]{32}$/);
    assert.equal(ready.resumed, false);
    assert.equal(ready.resume_window_ms, 60_000);
    assert.equal(ready.request_id, undefined);
    assert.equal(ready.frames_lost, undefined);

    const done = await c.chat("r1", { prompt: "Hi there" });
    assert.equal(done.type, "chat.complete");
    assert.equal(c.text("r1"), answer("Hi there"));
    assert.equal(done.model, "convergio-demo");
    assert.equal(done.provider, "demo");
    assert.equal(done.finish_reason, "stop");
    const usage = done.usage as Record<string, number>;
    assert.deepEqual(Object.keys(usage).sort(), USAGE_KEYS);
    assert.equal(usage.out_tokens, answer("Hi there").split(" ").length);
    assert.ok(usage.in_tokens > 0);
    assert.equal(usage.tool_calls, 0);
    assert.equal(usage.audio_in_s, 0);
    assert.equal(usage.audio_out_s, 0);
    assert.equal(usage.cost_usd, (usage.in_tokens * 2 + usage.out_tokens * 8) / 1e6);

    assertIncreasing(c.frames);
    assert.equal(c.frames[0].event_id, 1);
    for (const f of c.frames) {
      assert.equal(typeof f.timestamp_ms, "number");
      assert.ok(Number.isInteger(f.event_id));
      if (f.type !== "session.ready") assert.equal(f.request_id, "r1");
    }
    assert.ok(c.frames.filter((f) => f.type === "chat.token").length > 1, "streamed in tokens");

    const event = await waitForEvent(gw, `${sid}:r1`);
    assert.equal(event.success, true);
    assert.equal(event.error_code, null);
    assert.equal(event.session_id, sid);
    assert.equal(event.tenant_id, "t1");
    assert.equal(event.user_id, "u1");
    assert.equal(event.mode, "byok");
    assert.equal(event.model, "convergio-demo");
    assert.equal(event.provider, "demo");
    assert.equal(event.output_tokens, usage.out_tokens);
    assert.equal(event.input_tokens, usage.in_tokens);
    assert.equal(event.cost_usd, usage.cost_usd);

    const line = requestLog(gw, `${sid}:r1`);
    assert.ok(line, "a request log line for the frame's request");
    assert.equal(line.method, "WS");
    assert.equal(line.route, "/v1/ws");
    assert.equal(line.session_id, sid);
    assert.equal(line.status, 200);
    assert.equal(line.output_tokens, usage.out_tokens);
  });
});

Deno.test("ws auth: a bearer.<jwt> subprotocol beside convergio.v1 works, and the server answers convergio.v1", async () => {
  await withGateway(undefined, async ({ gw, open }) => {
    const { c } = await open(await gw.token(), { via: "protocol" });
    assert.equal(c.ws.protocol, SUBPROTOCOL);
    const done = await c.chat("p1", { messages: [{ role: "user", content: "via protocol" }] });
    assert.equal(done.type, "chat.complete");
    assert.equal(c.text("p1"), answer("via protocol"));
  });
});

Deno.test("ws auth: refusals come before the upgrade, with the contract's codes", async () => {
  await withGateway(undefined, async ({ gw }) => {
    const token = await gw.token();
    const bearer = { authorization: `Bearer ${token}` };
    const refusals: Array<[string, Record<string, string>, number, string?, boolean?]> = [
      ["/v1/ws", {}, 401, "auth.invalid"],
      ["/v1/ws", { authorization: "Bearer not.a.jwt" }, 401, "auth.invalid"],
      ["/v1/ws", { "sec-websocket-protocol": `${SUBPROTOCOL}, bearer.garbage` }, 401],
      ["/v1/ws", { "sec-websocket-protocol": `bearer.${token}` }, 400, "request.invalid"],
      ["/v1/ws?session_id=wss_nope&last_event_id=3", bearer, 410, "session.expired"],
      ["/v1/ws", bearer, 426, undefined, false],
    ];
    for (const [path, headers, status, code, upgrade] of refusals) {
      await assertRefused(gw, path, headers, status, code, upgrade);
    }

    // A browser-style client just fails to open.
    await assert.rejects(WsClient.open(gw, "not.a.jwt"), /failed to open/);
    await assert.rejects(WsClient.open(gw, "not.a.jwt", { via: "protocol" }), /failed to open/);
    assert.equal(gw.deps.edge!.sessions.size, 0, "no session for a refused upgrade");
  });
});

// ---------------------------------------------------------------------------------------------
// Several requests on one socket

Deno.test("ws concurrency: requests in flight at once interleave, each complete and in order", async () => {
  await withSocket(testConfig({ providers: slow(20, 15) }), async ({ gw, c, sid }) => {
    const prompts: Record<string, string> = {
      a: "first of three",
      b: "second one here",
      c: "and the third",
    };
    for (const [id, prompt] of Object.entries(prompts)) c.start(id, { prompt });
    for (const id of Object.keys(prompts)) {
      assert.equal((await c.end(id)).type, "chat.complete");
    }
    for (const [id, prompt] of Object.entries(prompts)) {
      assert.equal(c.text(id), answer(prompt), `request ${id} complete and in order`);
      const mine = c.ofRequest(id);
      assert.equal(mine[mine.length - 1].type, "chat.complete", "chat.complete is its last frame");
    }
    assertIncreasing(c.frames);
    // Interleaved: some frame of another request lies between a's first and last frame.
    const order = c.frames.map((f) => f.request_id);
    const first = order.indexOf("a");
    const last = order.lastIndexOf("a");
    assert.ok(
      order.slice(first, last).some((r) => r === "b" || r === "c"),
      `frames interleave: ${order.join(",")}`,
    );
    await eventually(() => gw.events.length >= 3, "three usage events");
    assert.deepEqual(
      gw.events.map((e) => e.request_id).sort(),
      ["a", "b", "c"].map((id) => `${sid}:${id}`),
    );
  });
});

Deno.test("ws concurrency: over max_inflight → quota.exceeded; a duplicate in-flight id → request.invalid", async () => {
  const config = testConfig({ providers: slow(100, 30), ws: { max_inflight: 2 } });
  await withSocket(config, async ({ gw, c, sid }) => {
    for (const id of ["one", "two", "three"]) c.start(id, { prompt: id });
    const over = await c.waitFor((f) => f.request_id === "three", "three's refusal");
    assertError(over, "quota.exceeded", { retryable: true, message: /at most 2/ });

    c.start("one", { prompt: "again" });
    const dup = await c.waitFor(
      (f) => f.request_id === "one" && f.type === "error",
      "the duplicate's refusal",
    );
    assertError(dup, "request.invalid", { retryable: false });

    for (const id of ["one", "two"]) {
      await c.waitFor((f) => f.request_id === id && f.type === "chat.complete", `${id} complete`);
    }
    assert.equal(c.text("one"), answer("one"), "the duplicate did not disturb the original");
    assert.equal(c.text("two"), answer("two"));
    assert.equal(c.ofRequest("three").length, 1, "a refused request sends nothing more");

    // Once the others finished, a new request is admitted again.
    assert.equal((await c.chat("four", { prompt: "four" })).type, "chat.complete");
    assert.equal(usageEvent(gw, `${sid}:three`), undefined, "refused before any provider call");
  });
});

// ---------------------------------------------------------------------------------------------
// Tool calls and cancel

Deno.test("ws tools: a tool.call frame with its JSON arguments, then chat.complete with tool_calls 1", async () => {
  await withSocket(undefined, async ({ gw, c, sid }) => {
    const done = await c.chat("t1", {
      prompt: "weather in Rome?",
      tools: [{
        type: "function",
        function: {
          name: "get_weather",
          description: "current weather",
          parameters: {
            type: "object",
            properties: { city: { type: "string" }, days: { type: "integer" } },
          },
        },
      }],
      tool_choice: "auto",
    });
    assert.equal(done.type, "chat.complete");
    assert.equal(done.finish_reason, "tool_calls");
    assert.equal((done.usage as Record<string, number>).tool_calls, 1);
    const calls = c.ofRequest("t1").filter((f) => f.type === "tool.call");
    assert.equal(calls.length, 1);
    const call = calls[0];
    assert.ok(call.event_id < done.event_id, "tool.call comes before chat.complete");
    assert.match(String(call.tool_call_id), /^call_/);
    assert.equal(call.tool_name, "get_weather");
    const args = typeof call.arguments === "string" ? JSON.parse(call.arguments) : call.arguments;
    assert.deepEqual(args, { city: answer("weather in Rome?"), days: 1 });
    assert.equal(c.text("t1"), "");
    const event = await waitForEvent(gw, `${sid}:t1`);
    assert.equal(event.tool_calls_count, 1);
    assert.equal(event.success, true);
  });
});

Deno.test("ws cancel: chat.cancel mid-stream → finish_reason cancelled, usage for what was produced, budget settled to actual", async () => {
  const price = { input_per_1m: 1000, output_per_1m: 1000 };
  const config = testConfig({
    providers: slow(0, 50),
    models: { "convergio-demo": { deployments: [{ provider: "demo", model: "m" }], price } },
    tenant_defaults: { daily_budget_usd: 100, monthly_budget_usd: 1000 },
  });
  await withSocket(config, async ({ gw, c, sid }) => {
    const prompt = "a long prompt so that the answer takes a while to stream out";
    c.start("k1", { prompt });
    await c.tokens(3, "k1");
    c.send({ type: "chat.cancel", request_id: "k1" });
    const done = await c.end("k1");
    assert.equal(done.type, "chat.complete");
    assert.equal(done.finish_reason, "cancelled");
    assert.equal(done.model, "convergio-demo");
    const usage = done.usage as Record<string, number>;
    assert.deepEqual(Object.keys(usage).sort(), USAGE_KEYS);
    const full = answer(prompt);
    const seen = c.text("k1");
    assert.ok(seen.length < full.length && full.startsWith(seen), "cut short, in order");
    assert.ok(usage.out_tokens > 0, "charged for the tokens produced");
    assert.ok(usage.in_tokens > 0);
    assert.equal(usage.cost_usd, (usage.in_tokens + usage.out_tokens) * 1000 / 1e6);

    const event = await failedEvent(gw, `${sid}:k1`, "request.cancelled");
    assert.equal(event.output_tokens, usage.out_tokens);
    assert.equal(event.input_tokens, usage.in_tokens);
    assert.equal(event.cost_usd, usage.cost_usd);
    assert.equal(requestLog(gw, `${sid}:k1`)?.status, 499);

    // The guard kept only the actual (estimated) cost, not the worst-case reservation.
    await gw.deps.edge!.guard.idle();
    const scopes: SpendScope[] = requestScopes("t1", "u1", periodsAt(Date.now()));
    const spend = await gw.deps.edge!.store.spend(scopes);
    const actual = (usage.in_tokens + usage.out_tokens) * 1000;
    assert.deepEqual(spend, scopes.map(() => actual));
    assert.ok(actual < 4096 * 1000, "well under the reservation");

    // Cancelling what is not in flight is an error on the socket, which stays usable.
    const before = c.frames.length;
    c.send({ type: "chat.cancel", request_id: "k1" });
    const err = await c.errorAfter(before, "cancel of a finished request");
    assert.equal(err.code, "request.invalid");
    assert.equal(err.request_id, "k1");
    assert.equal((await c.chat("k2", { prompt: "ok" })).type, "chat.complete");
  }, { mode: "managed" });
});

Deno.test("ws cancel: chat.cancel before the first token → chat.complete cancelled, not an internal error", async () => {
  await withSocket(testConfig({ providers: slow(400, 10) }), async ({ gw, c, sid }) => {
    c.start("e1", { prompt: "never mind" });
    // The provider is still waiting for its first token when the cancel arrives.
    await new Promise((r) => setTimeout(r, 100));
    c.send({ type: "chat.cancel", request_id: "e1" });
    const end = await c.end("e1");
    assert.equal(c.text("e1"), "");
    assert.notEqual(
      end.code,
      "internal",
      `a client cancel is not a server error: ${JSON.stringify(end)}`,
    );
    assert.equal(end.type, "chat.complete");
    assert.equal(end.finish_reason, "cancelled");
    await failedEvent(gw, `${sid}:e1`, "request.cancelled");
    assert.equal(requestLog(gw, `${sid}:e1`)?.status, 499);
  });
});

// ---------------------------------------------------------------------------------------------
// Invalid frames

Deno.test("ws invalid frames: each gets a request.invalid error frame and the socket stays usable", async () => {
  await withSocket(testConfig({ ws: { max_frame_bytes: 200 } }), async ({ gw, c }) => {
    const start = (request_id: string, fields: Record<string, unknown>) => ({
      type: "chat.start",
      request_id,
      ...fields,
    });
    const cases: Array<[string, unknown, string | undefined]> = [
      ["not JSON", "{nope", undefined],
      ["a JSON array", "[1,2]", undefined],
      ["JSON null", "null", undefined],
      ["an unknown type", { type: "chat.explode", request_id: "u1" }, "u1"],
      ["no type", { request_id: "u2", prompt: "x" }, "u2"],
      ["a voice frame on the chat socket", { type: "voice.stop", request_id: "u3" }, "u3"],
      ["no request_id", { type: "chat.start", prompt: "x" }, undefined],
      ["a bad request_id", start("sp ace", { prompt: "x" }), "sp ace"],
      [
        "prompt and messages",
        start("u4", {
          prompt: "x",
          messages: [{ role: "user", content: "y" }],
        }),
        "u4",
      ],
      ["neither prompt nor messages", start("u5", {}), "u5"],
      ["an unknown field", start("u6", { prompt: "x", agent: 1 }), "u6"],
      ["a bad temperature", start("u7", { prompt: "x", temperature: 9 }), "u7"],
      ["an oversized frame", start("u8", { prompt: "x".repeat(300) }), undefined],
    ];
    for (const [what, frame, requestId] of cases) {
      const before = c.frames.length;
      c.send(frame);
      const err = await c.errorAfter(before, what);
      assert.equal(err.code, "request.invalid", what);
      assert.equal(err.retryable, false, what);
      assert.equal(typeof err.message, "string", what);
      assert.equal(err.request_id, requestId, what);
    }
    const sized = c.frames.filter((f) => f.type === "error").pop()!;
    assert.match(String(sized.message), /exceeds 200 bytes/);
    assert.equal(c.ws.readyState, WebSocket.OPEN);

    const done = await c.chat("fine", { prompt: "still here" });
    assert.equal(done.type, "chat.complete");
    assert.equal(c.text("fine"), answer("still here"));
    assertIncreasing(c.frames);
    assert.equal(gw.events.length <= 1, true, "no usage for frames that never started");
  });
});

Deno.test("ws invalid frames: a type named like an Object.prototype key is request.invalid, not a crash", async () => {
  // A throw inside the server's onmessage would be an uncaught error: in production it ends
  // the process. Catch it here so that it fails this test only.
  const uncaught: unknown[] = [];
  const onError = (e: ErrorEvent) => {
    e.preventDefault();
    uncaught.push(e.error);
  };
  globalThis.addEventListener("error", onError);
  try {
    await withSocket(undefined, async ({ c }) => {
      for (const type of ["toString", "constructor", "hasOwnProperty", "__proto__"]) {
        const before: number = c.frames.length;
        c.send({ type, request_id: "p1" });
        await c.until(
          (fs) => uncaught.length > 0 || fs.slice(before).some((f) => f.type === "error"),
          `an error frame for type ${type}`,
        );
        assert.deepEqual(uncaught.map(String), [], `type ${type} threw inside the server`);
        const err = c.frames.slice(before).find((f) => f.type === "error")!;
        assert.equal(err.code, "request.invalid");
        assert.equal(err.request_id, "p1");
      }
      assert.equal((await c.chat("after")).type, "chat.complete");
    });
  } finally {
    globalThis.removeEventListener("error", onError);
  }
});

Deno.test("ws invalid frames: a mode other than the token's lane is refused", async () => {
  await withSocket(undefined, async ({ c }) => {
    const err = await c.chat("m1", { prompt: "x", mode: "managed" });
    assertError(err, "request.invalid", { message: /lane/ });
  }, { mode: "byok" });
});

Deno.test("ws invalid frames: a binary frame gets an error frame, then close 1003", async () => {
  await withSocket(undefined, async ({ c }) => {
    c.ws.send(new Uint8Array([1, 2, 3]));
    const closed = await c.closedWithin();
    assert.ok(closed, "the server closed the socket");
    assert.equal(closed.code, 1003);
    const err = c.frames.find((f) => f.type === "error");
    assert.ok(err, "an error frame came before the close");
    assert.equal(err.code, "request.invalid");
    assert.match(String(err.message), /binary/);
  });
});

// ---------------------------------------------------------------------------------------------
// Guardrails: the same chat service and guard as HTTP

Deno.test("ws guardrails: rpm limit → error quota.exceeded (retryable)", async () => {
  await withSocket(testConfig({ tenant_defaults: { rpm: 1 } }), async ({ gw, c, sid }) => {
    assert.equal((await c.chat("g1")).type, "chat.complete");
    assertError(await c.chat("g2"), "quota.exceeded", { retryable: true });
    await failedEvent(gw, `${sid}:g2`, "quota.exceeded");
  });
});

Deno.test("ws guardrails: managed spend at 110% → error budget.blocked; BYOK still answers", async () => {
  const config = testConfig({
    tenant_defaults: { daily_budget_usd: 100, monthly_budget_usd: 1000 },
  });
  await withGateway(config, async ({ gw, open }) => {
    const day = { scope: "tenant", id: "t1", period: "day", bucket: periodsAt(Date.now()).day };
    await gw.deps.edge!.store.setSpend(day as SpendScope, 110_000_000);
    const { c, sid } = await open({ mode: "managed" });
    assertError(await c.chat("b1"), "budget.blocked", { retryable: false });
    const event = await waitForEvent(gw, `${sid}:b1`);
    assert.equal(event.error_code, "budget.blocked");

    const { c: b } = await open({ mode: "byok" });
    assert.equal((await b.chat("b2")).type, "chat.complete");
  });
});

Deno.test("ws guardrails: an unknown model_hint or a voice model is request.invalid", async () => {
  const model = (provider: string, model: string, input_per_1m: number, output_per_1m: number) => ({
    deployments: [{ provider, model }],
    price: { input_per_1m, output_per_1m },
  });
  const config = testConfig({
    providers: { demo: { protocol: "mock" }, voice: { protocol: "realtime_mock" } },
    models: {
      "convergio-demo": model("demo", "demo-large", 2, 8),
      "convergio-talk": model("voice", "rt", 32, 64),
    },
    voice: { model: "convergio-talk" },
  });
  await withSocket(config, async ({ c }) => {
    const hint = (id: string, model_hint: string) => c.chat(id, { prompt: "x", model_hint });
    assertError(await hint("h1", "no-such-model"), "request.invalid", { message: /unknown model/ });
    assertError(await hint("h2", "convergio-talk"), "request.invalid", { message: /voice model/ });
    assert.equal((await hint("h3", "convergio-demo")).type, "chat.complete");
  });
});

// ---------------------------------------------------------------------------------------------
// Resume

Deno.test("ws resume: a dropped socket resumes with the frames it missed, exactly once, then live ones", async () => {
  await withGateway(testConfig({ providers: slow(0, 40) }), async ({ gw, open }) => {
    const token = await gw.token();
    const attempts0 = await chatMetric(gw, "reconnect_attempts");
    const successes0 = await chatMetric(gw, "reconnect_successes");
    const dropouts0 = await chatMetric(gw, "dropouts");

    const { c: c1, sid } = await open(token);
    const prompt = "please keep talking for a while so the drop lands mid-stream";
    c1.start("r1", { prompt });
    await c1.tokens(3);
    const seenBefore = c1.frames.slice();
    const lastSeen = Math.max(...seenBefore.map((f) => f.event_id));
    const closed = await c1.close(4000, "network gone");
    assert.equal(closed.code, 4000);
    assert.ok(
      !seenBefore.some((f) => f.type === "chat.complete"),
      "the drop happened mid-stream",
    );
    await eventually(
      async () => await chatMetric(gw, "dropouts", "4000") > dropouts0,
      "the dropout metric",
    );

    const { c: c2 } = await open(token, { query: `session_id=${sid}&last_event_id=${lastSeen}` });
    const ready = c2.ready;
    assert.equal(ready.session_id, sid);
    assert.equal(ready.resumed, true);
    assert.equal(ready.frames_lost, undefined);
    const done = await c2.end("r1");
    assert.equal(done.type, "chat.complete");
    assert.equal(done.finish_reason, "stop");

    // Every frame of the session arrived exactly once across the two sockets, in id order.
    assert.ok(c2.frames.every((f) => f.event_id > lastSeen), "nothing before last_event_id");
    assertIncreasing(c2.frames);
    const union = [...seenBefore, ...c2.frames].sort((a, b) => a.event_id - b.event_id);
    assert.deepEqual(
      union.map((f) => f.event_id),
      union.map((_, i) => i + 1),
      "no duplicate and no gap in event ids",
    );
    assert.equal(tokenText(union.filter((f) => f.request_id === "r1")), answer(prompt));

    assert.equal(await chatMetric(gw, "reconnect_attempts"), attempts0 + 1);
    assert.equal(await chatMetric(gw, "reconnect_successes"), successes0 + 1);
    const event = await waitForEvent(gw, `${sid}:r1`);
    assert.equal(event.success, true);
    assert.equal(gw.events.length, 1, "one request, one usage event");

    // The resumed socket carries new requests.
    assert.equal((await c2.chat("r2", { prompt: "after resume" })).type, "chat.complete");
    assert.equal(c2.text("r2"), answer("after resume"));
  });
});

Deno.test("ws resume: frames_lost when the replay buffer no longer has them", async () => {
  await withGateway(testConfig({ ws: { replay_frames: 3 } }), async ({ gw, open }) => {
    const token = await gw.token();
    const { c: c1, sid } = await open(token);
    await c1.close(4001);
    await detached(gw, sid, "the server noticed the drop");
    const successes0 = await chatMetric(gw, "reconnect_successes");
    // Resume claiming to have seen only the first frame; the ring kept just 3 frames.
    const { c: c2 } = await open(token, { query: `session_id=${sid}&last_event_id=0` });
    assert.equal(c2.ready.resumed, true);
    assert.equal(c2.ready.frames_lost, undefined, "only one frame so far: nothing lost");
    assert.equal(c2.frames[0].event_id, 1, "the whole ring was replayed");
    await c2.chat("x", { prompt: "many words in this prompt to make many frames" });
    const last = c2.lastEventId;
    await c2.close(4001);
    await detached(gw, sid, "the server noticed the second drop");

    const { c: c3 } = await open(token, { query: `session_id=${sid}&last_event_id=1` });
    const again = c3.ready;
    assert.equal(again.resumed, true);
    assert.equal(again.frames_lost, true);
    const replayed = c3.frames.filter((f) => f.event_id <= last);
    assert.deepEqual(replayed.map((f) => f.event_id), [last - 2, last - 1, last]);
    assert.equal(
      await chatMetric(gw, "reconnect_successes"),
      successes0 + 1,
      "a resume with frames lost is not a success",
    );
  });
});

Deno.test("ws resume: another user's token cannot resume a session (410)", async () => {
  await withGateway(undefined, async ({ gw, open }) => {
    const alice = { tenant: "t1", user: "alice" };
    const { c: c1, sid } = await open(alice);
    await c1.close(4000);
    for (const other of [{ tenant: "t1", user: "bob" }, { tenant: "t2", user: "alice" }]) {
      await assertExpired(gw, sid, await gw.token(other));
    }
    // The owner still can.
    const { c: c2 } = await open(alice, { query: `session_id=${sid}&last_event_id=1` });
    assert.equal(c2.frames.find((f) => f.type === "session.ready")?.resumed, true);
  });
});

Deno.test("ws resume: after the resume window → 410, and the in-flight request was cancelled and settled", async () => {
  const config = testConfig({ providers: slow(0, 50), ws: { resume_window_ms: 200 } });
  await withGateway(config, async ({ gw, open }) => {
    const token = await gw.token();
    const { c, ready, sid } = await open(token);
    assert.equal(ready.resume_window_ms, 200);
    c.start("w1", { prompt: "a long prompt ".repeat(10) });
    await c.waitFor((f) => f.type === "chat.token", "a token");
    await c.close(4000);

    const event = await failedEvent(gw, `${sid}:w1`, "request.cancelled");
    assert.ok(event.output_tokens > 0);
    await sessionsEnded(gw);
    await assertExpired(gw, sid, token, 2);
  });
});

Deno.test("ws resume: a normal close (1000) ends the session; a later resume → 410", async () => {
  await withGateway(undefined, async ({ gw, open }) => {
    const token = await gw.token();
    const dropouts0 = await metric(gw, "convergio_ws_dropouts_total");
    const { c, sid } = await open(token);
    assert.equal((await c.close(1000, "bye")).code, 1000);
    await sessionsEnded(gw);
    await assertExpired(gw, sid, token);
    assert.equal(await metric(gw, "convergio_ws_dropouts_total"), dropouts0, "not a dropout");
  });
});

// ---------------------------------------------------------------------------------------------
// Backpressure and idle timeout

Deno.test("ws backpressure: a reader past max_buffered_bytes gets stream.slow_consumer", async () => {
  await withSocket(testConfig({ ws: { max_buffered_bytes: 1 } }), async ({ gw, c, sid }) => {
    c.start("s1", { prompt: "word ".repeat(40).trim() });
    await failedEvent(gw, `${sid}:s1`, "stream.slow_consumer");
    // The client must learn that its stream ended: the error frame arrives (later is fine).
    assertError(await c.end("s1"), "stream.slow_consumer", { retryable: true });
  });
});

Deno.test("ws idle timeout: closes with 1000 'idle timeout', but not while a request is in flight", async () => {
  const config = testConfig({ providers: slow(0, 40), ws: { idle_timeout_ms: 300 } });
  await withSocket(config, async ({ gw, c }) => {
    // This stream lasts longer than the idle timeout and must not be cut.
    const done = await c.chat("i1", {
      prompt: "one two three four five six seven eight nine ten eleven twelve",
    });
    assert.equal(done.type, "chat.complete");
    assert.equal(done.finish_reason, "stop");
    const closed = await c.closedWithin();
    assert.ok(closed, "the idle socket was closed");
    assert.equal(closed.code, 1000);
    assert.equal(closed.reason, "idle timeout");
    await sessionsEnded(gw, "an idle close ends the session");
  });
});
