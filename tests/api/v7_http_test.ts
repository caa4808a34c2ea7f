import assert from "node:assert/strict";
import { readSse, startGateway, testConfig, withFullGateway } from "../support/gateway.ts";

const json = (body: unknown, token?: string, headers: Record<string, string> = {}) => ({
  method: "POST",
  headers: {
    "content-type": "application/json",
    ...(token ? { authorization: `Bearer ${token}` } : {}),
    ...headers,
  },
  body: JSON.stringify(body),
});

Deno.test("POST /v1/chat answers with message, request id and usage summary", async () => {
  const gw = await startGateway();
  try {
    const res = await fetch(`${gw.url}/v1/chat`, json({ prompt: "Hi there" }, await gw.token()));
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(
      body.message.content,
      "Hello from the Convergio demo provider. You said: Hi there",
    );
    assert.equal(body.request_id, res.headers.get("x-request-id"));
    assert.match(body.request_id, /^req_[0-9a-f]{32}$/);
    assert.equal(body.model, "convergio-demo");
    assert.equal(body.provider, "demo");
    assert.equal(body.finish_reason, "stop");
    assert.deepEqual(Object.keys(body.usage).sort(), [
      "audio_in_s",
      "audio_out_s",
      "cost_usd",
      "in_tokens",
      "out_tokens",
      "tool_calls",
    ]);
    assert.equal(body.usage.out_tokens, 10);
    const expectedCost = (body.usage.in_tokens * 2 + body.usage.out_tokens * 8) / 1e6;
    assert.equal(body.usage.cost_usd, Math.round(expectedCost * 1e6) / 1e6);
  } finally {
    await gw.close();
  }
});

Deno.test("a valid incoming x-request-id is honoured and an unsafe one replaced", async () => {
  const gw = await startGateway();
  try {
    const token = await gw.token();
    const ok = await fetch(
      `${gw.url}/v1/chat`,
      json({ prompt: "x" }, token, { "x-request-id": "client-abc.123" }),
    );
    assert.equal((await ok.json()).request_id, "client-abc.123");
    const bad = await fetch(
      `${gw.url}/v1/chat`,
      json({ prompt: "x" }, token, { "x-request-id": "bad id <script>" }),
    );
    const id = (await bad.json()).request_id;
    assert.notEqual(id, "bad id <script>");
    assert.match(id, /^req_/);
  } finally {
    await gw.close();
  }
});

Deno.test("POST /v1/chat/stream sends token frames then chat.complete with usage", async () => {
  const gw = await startGateway();
  try {
    const res = await fetch(
      `${gw.url}/v1/chat/stream`,
      json({ prompt: "stream me" }, await gw.token()),
    );
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /text\/event-stream/);
    const events = await readSse(res);
    const frames = events.map((e) => ({ event: e.event, ...JSON.parse(e.data) }));
    const tokens = frames.filter((f) => f.type === "chat.token");
    assert.equal(
      tokens.map((t) => t.text).join(""),
      "Hello from the Convergio demo provider. You said: stream me",
    );
    const last = frames[frames.length - 1];
    assert.equal(last.type, "chat.complete");
    assert.equal(last.event, "chat.complete");
    assert.equal(last.usage.out_tokens, tokens.length);
    const ids = frames.map((f) => f.event_id);
    assert.deepEqual(ids, ids.map((_, i) => i + 1));
    for (const f of frames) {
      assert.equal(f.request_id, res.headers.get("x-request-id"));
      assert.equal(typeof f.timestamp_ms, "number");
    }
    const line = gw.logs.find((l) => l.route === "/v1/chat/stream");
    assert.equal(line?.output_tokens, tokens.length);
    assert.equal(line?.status, 200);
  } finally {
    await gw.close();
  }
});

Deno.test("V7 stream reports a tool call as one tool.call frame", async () => {
  const gw = await startGateway();
  try {
    const tools = [{
      type: "function",
      function: {
        name: "lookup",
        parameters: {
          type: "object",
          properties: { q: { type: "string" }, n: { type: "integer" } },
        },
      },
    }];
    const res = await fetch(
      `${gw.url}/v1/chat/stream`,
      json({ prompt: "find", tools }, await gw.token()),
    );
    const frames = (await readSse(res)).map((e) => JSON.parse(e.data));
    const call = frames.find((f) => f.type === "tool.call");
    assert.equal(call.tool_name, "lookup");
    assert.deepEqual(JSON.parse(call.arguments), {
      q: "Hello from the Convergio demo provider. You said: find",
      n: 1,
    });
    assert.equal(frames[frames.length - 1].usage.tool_calls, 1);
  } finally {
    await gw.close();
  }
});

Deno.test("bad input gets request.invalid naming the field, never a 500", async () => {
  const gw = await startGateway(testConfig({ server: { max_body_bytes: 2048 } }));
  try {
    const token = await gw.token();
    const cases: Array<[string, RequestInit, number, string | null]> = [
      ["malformed JSON", { ...json({}, token), body: "{nope" }, 400, null],
      ["wrong type", json({ prompt: 42 }, token), 400, "prompt"],
      ["both prompt and messages", json({ prompt: "a", messages: [] }, token), 400, "messages"],
      ["neither", json({}, token), 400, "prompt"],
      ["unknown field", json({ prompt: "a", bogus: 1 }, token), 400, null],
      ["unknown model", json({ prompt: "a", model_hint: "gpt-9" }, token), 400, "model"],
      ["switching lane", json({ prompt: "a", mode: "managed" }, token), 400, "mode"],
      ["body too large", json({ prompt: "x".repeat(4096) }, token), 413, null],
    ];
    for (const [name, init, status, param] of cases) {
      const res = await fetch(`${gw.url}/v1/chat`, init);
      const body = await res.json();
      assert.equal(res.status, status, name);
      assert.equal(body.error.code, "request.invalid", name);
      assert.equal(body.error.retryable, false, name);
      if (param) assert.equal(body.error.param, param, name);
      assert.ok(body.error.message.length > 0, name);
      assert.equal(body.request_id, res.headers.get("x-request-id"), name);
    }
    const notFound = await fetch(`${gw.url}/v1/nope`);
    assert.equal(notFound.status, 404);
    assert.equal((await notFound.json()).error.code, "request.invalid");
  } finally {
    await gw.close();
  }
});

Deno.test("missing or bad tokens get 401 auth.invalid on every protected route", async () => {
  const gw = await startGateway();
  try {
    for (
      const [method, path] of [
        ["POST", "/v1/chat"],
        ["POST", "/v1/chat/stream"],
        ["POST", "/v1/chat/completions"],
        ["GET", "/v1/models"],
        ["GET", "/v1/me"],
        ["POST", "/v1/auth/logout"],
      ]
    ) {
      for (const auth of [undefined, "Bearer not.a.jwt", "Basic abc"]) {
        const res = await fetch(`${gw.url}${path}`, {
          method,
          headers: auth ? { authorization: auth } : {},
          body: method === "POST" ? "{}" : undefined,
        });
        assert.equal(res.status, 401, `${method} ${path} ${auth}`);
        const body = await res.json();
        assert.equal(body.error.code, "auth.invalid");
      }
    }
  } finally {
    await gw.close();
  }
});

Deno.test("API key login, /v1/me, and logout revoking the token", async () => {
  await withFullGateway({}, async (gw) => {
    const admin = await gw.token({ tenant: "platform", user: "ops", roles: ["admin"] });
    const created = await fetch(
      `${gw.url}/admin/api-keys`,
      json({
        tenant_id: "school-1",
        user_id: "teacher-7",
        roles: ["tenant_admin"],
        mode: "managed",
      }, admin),
    );
    assert.equal(created.status, 201);
    const key = (await created.json()).api_key;

    const wrong = await fetch(`${gw.url}/v1/auth/login`, json({ api_key: "cvg_wrong" }));
    assert.equal(wrong.status, 401);
    assert.equal((await wrong.json()).error.code, "auth.invalid");

    const login = await fetch(`${gw.url}/v1/auth/login`, json({ api_key: key }));
    assert.equal(login.status, 200);
    const { access_token, token_type, expires_in } = await login.json();
    assert.equal(token_type, "Bearer");
    assert.equal(expires_in, 900);

    const me = await fetch(`${gw.url}/v1/me`, {
      headers: { authorization: `Bearer ${access_token}` },
    });
    const who = await me.json();
    assert.equal(who.tenant_id, "school-1");
    assert.equal(who.user_id, "teacher-7");
    assert.deepEqual(who.roles, ["tenant_admin"]);
    assert.equal(who.mode, "managed");
    assert.equal(who.limits.monthly_budget_usd, 20);

    const out = await fetch(`${gw.url}/v1/auth/logout`, {
      method: "POST",
      headers: { authorization: `Bearer ${access_token}` },
    });
    assert.equal(out.status, 200);
    assert.equal((await out.json()).revoked, true);
    const after = await fetch(`${gw.url}/v1/me`, {
      headers: { authorization: `Bearer ${access_token}` },
    });
    assert.equal(after.status, 401);
    assert.match((await after.json()).error.message, /revoked/);
    assert.ok(!JSON.stringify(gw.logs).includes(key), "the API key must never be logged");
  });
});

Deno.test("one JSON log line per request with the spec's fields, and no secrets", async () => {
  const gw = await startGateway(testConfig({
    providers: {
      demo: { protocol: "mock" },
      up: { protocol: "openai", base_url: "http://127.0.0.1:9", api_key: "sk-house-secret-xyz" },
    },
  }));
  try {
    const token = await gw.token({ tenant: "acme", user: "bob" });
    const res = await fetch(`${gw.url}/v1/chat`, json({ prompt: "log me" }, token));
    await res.body?.cancel();
    const lines = gw.logs.filter((l) => l.msg === "request");
    assert.equal(lines.length, 1);
    const line = lines[0];
    for (
      const field of [
        "request_id",
        "tenant_id",
        "user_id",
        "provider",
        "model",
        "mode",
        "input_tokens",
        "output_tokens",
        "tool_calls",
        "audio_seconds",
        "latency_ms",
        "status",
      ]
    ) {
      assert.ok(field in line, `missing ${field}`);
    }
    assert.equal(line.tenant_id, "acme");
    assert.equal(line.user_id, "bob");
    assert.equal(line.provider, "demo");
    assert.equal(line.mode, "byok");
    const all = JSON.stringify(gw.logs) + JSON.stringify(gw.deps.config);
    assert.ok(!all.includes("sk-house-secret-xyz"));
    assert.ok(!all.includes("test-secret-that-is-long-enough"));
    assert.ok(!all.includes(token));
  } finally {
    await gw.close();
  }
});
