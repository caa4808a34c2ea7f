import assert from "node:assert/strict";
import { CHAT_FRAMES, type FrameError, parseFrame, VOICE_FRAMES } from "../../src/ws/frames.ts";

/** Unit tests of `parseFrame`: every error path, and the frame types each socket accepts. */

const MAX = 10_000;
const chat = (frame: unknown, max = MAX) =>
  parseFrame(typeof frame === "string" ? frame : JSON.stringify(frame), CHAT_FRAMES, max);
const voice = (frame: unknown, max = MAX) =>
  parseFrame(typeof frame === "string" ? frame : JSON.stringify(frame), VOICE_FRAMES, max);

type Result = { ok: true; frame: unknown } | { ok: false; error: FrameError };

function ok(r: Result) {
  if (!r.ok) assert.fail(`expected a frame, got ${JSON.stringify(r.error)}`);
  return r.frame as Record<string, unknown>;
}

function fails(r: Result, message: RegExp, requestId?: string) {
  if (r.ok) assert.fail(`expected request.invalid, got ${JSON.stringify(r.frame)}`);
  assert.equal(r.error.code, "request.invalid");
  assert.match(r.error.message, message);
  assert.equal(r.error.request_id, requestId);
}

Deno.test("parseFrame: a frame longer than the limit is refused before parsing", () => {
  const text = JSON.stringify({ type: "chat.start", request_id: "r", prompt: "x".repeat(100) });
  fails(parseFrame(text, CHAT_FRAMES, text.length - 1), new RegExp(`exceeds ${text.length - 1}`));
  ok(parseFrame(text, CHAT_FRAMES, text.length));
  // Even invalid JSON is refused for its size first.
  fails(parseFrame("{".repeat(50), CHAT_FRAMES, 10), /frame exceeds 10 bytes/);
});

Deno.test("parseFrame: the frame limit counts UTF-8 bytes, not UTF-16 code units", () => {
  // 300 "€" are 300 code units but 900 bytes on the wire.
  const text = JSON.stringify({ type: "chat.start", request_id: "r", prompt: "€".repeat(300) });
  const bytes = new TextEncoder().encode(text).length;
  assert.ok(text.length < 400 && bytes > 400);
  fails(parseFrame(text, CHAT_FRAMES, 400), /exceeds 400 bytes/);
});

Deno.test("parseFrame: text that is not JSON", () => {
  for (const text of ["", "{", "not json", "{'a':1}", '{"type":"chat.start",}']) {
    fails(chat(text), /not valid JSON/);
  }
});

Deno.test("parseFrame: JSON that is not an object", () => {
  for (const text of ["[]", '[{"type":"chat.start"}]', "null", "1", '"chat.start"', "true"]) {
    fails(chat(text), /must be a JSON object/);
  }
});

Deno.test("parseFrame: a missing, non-string or unknown type names the accepted types", () => {
  fails(chat({ request_id: "r1" }), /^type: unknown frame type undefined; expected one of/, "r1");
  fails(chat({ type: 7, request_id: "r1" }), /unknown frame type 7/, "r1");
  fails(chat({ type: "chat.explode" }), /unknown frame type "chat.explode"/);
  const r = chat({ type: "nope", request_id: "r2" });
  fails(r, /expected one of chat\.start, chat\.cancel$/, "r2");
  // A request_id that is not a string is not echoed back.
  fails(chat({ type: "nope", request_id: 5 }), /unknown frame type/);
});

Deno.test("parseFrame: a chat socket does not accept voice frames; a voice socket names them all", () => {
  for (const type of ["voice.start", "voice.chunk", "voice.stop", "voice.transcript"]) {
    fails(chat({ type, request_id: "v" }), /unknown frame type/, "v");
  }
  fails(
    voice({ type: "nope", request_id: "v" }),
    /expected one of chat\.start, chat\.cancel, voice\.start, voice\.chunk, voice\.stop, voice\.transcript$/,
    "v",
  );
});

Deno.test("parseFrame: a type named like an Object.prototype member is unknown, never a throw", () => {
  for (const type of ["toString", "constructor", "hasOwnProperty", "valueOf", "__proto__"]) {
    let r: Result | undefined;
    assert.doesNotThrow(() => {
      r = chat({ type, request_id: "p" });
    }, `type ${type}`);
    fails(r!, /unknown frame type/, "p");
  }
});

Deno.test("parseFrame: chat.start with a prompt, or messages, and every optional field", () => {
  assert.deepEqual(ok(chat({ type: "chat.start", request_id: "r1", prompt: "hi" })), {
    type: "chat.start",
    request_id: "r1",
    prompt: "hi",
  });
  const full = {
    type: "chat.start",
    request_id: "A-z_0.9:x",
    timestamp_ms: 1_700_000_000_000,
    messages: [
      { role: "system", content: "be brief" },
      { role: "user", content: [{ type: "text", text: "hi" }] },
    ],
    mode: "managed",
    model_hint: "convergio-demo",
    max_tokens: 64,
    temperature: 0,
    tools: [{ type: "function", function: { name: "f", parameters: { type: "object" } } }],
    tool_choice: { type: "function", function: { name: "f" } },
  };
  assert.deepEqual(ok(chat(full)), full);
  ok(
    chat({ type: "chat.start", request_id: "r", prompt: "x", temperature: 2, tool_choice: "none" }),
  );
  ok(chat({ type: "chat.start", request_id: "x".repeat(128), prompt: "x" }));
});

Deno.test("parseFrame: chat.start errors name the field and echo a string request_id", () => {
  fails(chat({ type: "chat.start", prompt: "x" }), /^request_id: /);
  fails(chat({ type: "chat.start", request_id: "", prompt: "x" }), /^request_id: /, "");
  fails(chat({ type: "chat.start", request_id: 3, prompt: "x" }), /^request_id: /);
  fails(
    chat({ type: "chat.start", request_id: "x".repeat(129), prompt: "x" }),
    /^request_id: /,
    "x".repeat(129),
  );
  fails(
    chat({ type: "chat.start", request_id: "a b", prompt: "x" }),
    /^request_id: must be \[A-Za-z0-9\._:-\]/,
    "a b",
  );
  fails(chat({ type: "chat.start", request_id: "r/1", prompt: "x" }), /^request_id:/, "r/1");
  fails(
    chat({
      type: "chat.start",
      request_id: "r",
      prompt: "x",
      messages: [{ role: "user", content: "y" }],
    }),
    /^prompt: give exactly one of prompt or messages$/,
    "r",
  );
  fails(chat({ type: "chat.start", request_id: "r" }), /^prompt: give exactly one/, "r");
  fails(chat({ type: "chat.start", request_id: "r", prompt: "" }), /^prompt: /, "r");
  fails(chat({ type: "chat.start", request_id: "r", messages: [] }), /^messages: /, "r");
  fails(
    chat({ type: "chat.start", request_id: "r", messages: [{ role: "robot", content: "x" }] }),
    /^messages\.0/,
    "r",
  );
  fails(
    chat({ type: "chat.start", request_id: "r", prompt: "x", agent_id: "a" }),
    /^chat\.start: Unrecognized key.*agent_id/,
    "r",
  );
  fails(chat({ type: "chat.start", request_id: "r", prompt: "x", mode: "free" }), /^mode: /, "r");
  fails(
    chat({ type: "chat.start", request_id: "r", prompt: "x", model_hint: "" }),
    /^model_hint/,
    "r",
  );
  for (const max_tokens of [0, -1, 1.5, "10"]) {
    fails(
      chat({ type: "chat.start", request_id: "r", prompt: "x", max_tokens }),
      /^max_tokens/,
      "r",
    );
  }
  for (const temperature of [-0.1, 2.1, "1"]) {
    fails(
      chat({ type: "chat.start", request_id: "r", prompt: "x", temperature }),
      /^temperature/,
      "r",
    );
  }
  fails(
    chat({ type: "chat.start", request_id: "r", prompt: "x", tools: [{ type: "function" }] }),
    /^tools\.0/,
    "r",
  );
  fails(
    chat({ type: "chat.start", request_id: "r", prompt: "x", tool_choice: "sometimes" }),
    /^tool_choice/,
    "r",
  );
  fails(
    chat({ type: "chat.start", request_id: "r", prompt: "x", timestamp_ms: "now" }),
    /^timestamp_ms/,
    "r",
  );
});

Deno.test("parseFrame: chat.cancel", () => {
  assert.deepEqual(ok(chat({ type: "chat.cancel", request_id: "r1" })), {
    type: "chat.cancel",
    request_id: "r1",
  });
  ok(chat({ type: "chat.cancel", request_id: "r1", timestamp_ms: 5 }));
  fails(chat({ type: "chat.cancel" }), /^request_id: /);
  fails(chat({ type: "chat.cancel", request_id: "r1", prompt: "x" }), /Unrecognized key/, "r1");
});

Deno.test("parseFrame: a voice socket accepts the chat frames too", () => {
  ok(voice({ type: "chat.start", request_id: "c", prompt: "typed instead" }));
  ok(voice({ type: "chat.cancel", request_id: "c" }));
});

Deno.test("parseFrame: voice.start sample rates, codecs, turn modes and lane", () => {
  for (const sample_rate of [8000, 16000, 24000, 48000]) {
    for (const codec of ["pcm16", "opus"]) {
      const f = ok(voice({ type: "voice.start", request_id: "v", codec, sample_rate }));
      assert.equal(f.sample_rate, sample_rate);
      assert.equal(f.codec, codec);
      assert.equal(f.mode, "vad", "turn detection defaults to vad");
    }
  }
  const ptt = ok(voice({
    type: "voice.start",
    request_id: "v",
    codec: "opus",
    sample_rate: 48000,
    mode: "push-to-talk",
    lane: "managed",
    model_hint: "convergio-voice",
    timestamp_ms: 1,
  }));
  assert.equal(ptt.mode, "push-to-talk");
  assert.equal(ptt.lane, "managed");

  for (const sample_rate of [44100, 16001, 0, -16000]) {
    fails(
      voice({ type: "voice.start", request_id: "v", codec: "pcm16", sample_rate }),
      /^sample_rate: sample_rate must be 8000, 16000, 24000 or 48000$/,
      "v",
    );
  }
  fails(
    voice({ type: "voice.start", request_id: "v", codec: "pcm16", sample_rate: 16000.5 }),
    /^sample_rate: /,
    "v",
  );
  fails(
    voice({ type: "voice.start", request_id: "v", codec: "pcm16", sample_rate: "16000" }),
    /^sample_rate: /,
    "v",
  );
  fails(voice({ type: "voice.start", request_id: "v", codec: "pcm16" }), /^sample_rate: /, "v");
  for (const codec of ["mp3", "PCM16", "", undefined]) {
    fails(
      voice({ type: "voice.start", request_id: "v", codec, sample_rate: 16000 }),
      /^codec: /,
      "v",
    );
  }
  fails(
    voice({ type: "voice.start", request_id: "v", codec: "opus", sample_rate: 16000, mode: "ptt" }),
    /^mode: /,
    "v",
  );
  fails(
    voice({ type: "voice.start", request_id: "v", codec: "opus", sample_rate: 16000, lane: "x" }),
    /^lane: /,
    "v",
  );
  fails(
    voice({ type: "voice.start", request_id: "v", codec: "opus", sample_rate: 16000, extra: 1 }),
    /Unrecognized key/,
    "v",
  );
  fails(voice({ type: "voice.start", codec: "opus", sample_rate: 16000 }), /^request_id: /);
});

Deno.test("parseFrame: voice.chunk bytes must be standard base64", () => {
  for (const b of ["AAECAw==", "AAE=", "AAEC", "QUJD", "a+/Z", "A"]) {
    const f = ok(voice({ type: "voice.chunk", request_id: "v", bytes_base64: b }));
    assert.equal(f.bytes_base64, b);
  }
  for (const b of ["", "ab$c", "AA==A", "=AAA", "AA===", "AA E", "AA\nE", "a-_b", "AAE=\n"]) {
    fails(
      voice({ type: "voice.chunk", request_id: "v", bytes_base64: b }),
      /^bytes_base64: /,
      "v",
    );
  }
  fails(voice({ type: "voice.chunk", request_id: "v", bytes_base64: 5 }), /^bytes_base64: /, "v");
  fails(voice({ type: "voice.chunk", request_id: "v" }), /^bytes_base64: /, "v");
  fails(
    voice({ type: "voice.chunk", request_id: "v", bytes_base64: "AAAA", codec: "opus" }),
    /Unrecognized key/,
    "v",
  );
});

Deno.test("parseFrame: voice.stop and voice.transcript", () => {
  assert.deepEqual(ok(voice({ type: "voice.stop", request_id: "v" })), {
    type: "voice.stop",
    request_id: "v",
  });
  fails(voice({ type: "voice.stop" }), /^request_id: /);
  fails(voice({ type: "voice.stop", request_id: "v", reason: "x" }), /Unrecognized key/, "v");

  const t = ok(voice({ type: "voice.transcript", request_id: "v", text: "hello there" }));
  assert.equal(t.text, "hello there");
  ok(voice({ type: "voice.transcript", request_id: "v", text: "x".repeat(20_000) }, 30_000));
  fails(
    voice({ type: "voice.transcript", request_id: "v", text: "x".repeat(20_001) }, 30_000),
    /^text: /,
    "v",
  );
  fails(voice({ type: "voice.transcript", request_id: "v", text: "" }), /^text: /, "v");
  fails(voice({ type: "voice.transcript", request_id: "v" }), /^text: /, "v");
});
