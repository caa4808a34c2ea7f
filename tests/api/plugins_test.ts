import assert from "node:assert/strict";
import OpenAI from "openai";
import { readSse, type TestGateway, withFullGateway } from "../support/gateway.ts";
import {
  admin,
  as,
  assertError,
  audit,
  call,
  chat,
  type Client,
  type Json,
  ledger,
  ok,
  REASON,
  tool,
  withReason,
} from "../support/admin_client.ts";
import { json, type Received, sseRaw, withUpstream } from "../support/recording_upstream.ts";
import { metricsText, metricValue } from "../voice/_voice_support.ts";

const PRICE = { input_per_1m: 2, output_per_1m: 8 };

/**
 * An OpenAI-wire upstream. Deployment `rogue` always calls `get_weather`,
 * whatever the request declared; `echo` calls the first declared tool, and
 * answers in text when there is none.
 */
function upstream(_req: Request, rec: Received): Response {
  const body = rec.body as Json;
  const name = body.model === "rogue" ? "get_weather" : body.tools?.[0]?.function.name;
  const usage = { prompt_tokens: 7, completion_tokens: 4, total_tokens: 11 };
  const call = { id: "call_up_1", type: "function", function: { name, arguments: '{"q":"x"}' } };
  const finish = name ? "tool_calls" : "stop";
  if (!body.stream) {
    return json(200, {
      id: "chatcmpl-up",
      object: "chat.completion",
      created: 1,
      model: body.model,
      choices: [{
        index: 0,
        message: name
          ? { role: "assistant", content: null, tool_calls: [call] }
          : { role: "assistant", content: "plain answer" },
        finish_reason: finish,
      }],
      usage,
    });
  }
  const chunk = (choices: unknown[], extra = {}) =>
    `data: ${
      JSON.stringify({
        id: "c",
        object: "chat.completion.chunk",
        model: body.model,
        choices,
        ...extra,
      })
    }\n\n`;
  const delta = name
    ? { tool_calls: [{ index: 0, ...call, function: { name, arguments: '{"q":"x"}' } }] }
    : { content: "plain answer" };
  return sseRaw([
    chunk([{ index: 0, delta: { role: "assistant", ...delta }, finish_reason: null }]),
    chunk([{ index: 0, delta: {}, finish_reason: finish }]),
    chunk([], { usage }),
    "data: [DONE]\n\n",
  ]);
}

interface Ctx {
  gw: TestGateway;
  root: Client;
  /** What the upstream received, in order. */
  received: Received[];
}

/** A full gateway with the mock (`convergio-demo`) and the upstream's `rogue` and `echo` aliases. */
function withPlugins(fn: (ctx: Ctx) => Promise<void>): Promise<void> {
  return withUpstream(upstream, (up) =>
    withFullGateway({
      providers: {
        demo: { protocol: "mock" },
        up: { protocol: "openai", base_url: up.origin, api_key: "sk-house-key" },
      },
      models: {
        "convergio-demo": {
          deployments: [{ provider: "demo", model: "demo-large" }],
          price: PRICE,
        },
        rogue: { deployments: [{ provider: "up", model: "rogue" }], price: PRICE },
        echo: { deployments: [{ provider: "up", model: "echo" }], price: PRICE },
      },
    }, async (gw) => fn({ gw, root: await admin(gw), received: up.received })));
}

const manifest = (over: Record<string, unknown> = {}) => ({
  name: "weather",
  version: "1.0.0",
  description: "weather lookups",
  tools: ["get_weather"],
  permissions: ["net.http"],
  ...over,
});

const install = (c: Client, m: Record<string, unknown>) =>
  c.post("/v1/plugins/install", { manifest: m, reason: REASON });

const grant = (root: Client, tenant: string, permissions: string[]) =>
  root.put(`/admin/flags/plugin_permissions/overrides/${tenant}`, {
    value: permissions,
    reason: REASON,
  });

Deno.test("GET /v1/plugins lists plugins to any signed-in user; installing is for platform admins", async () => {
  await withPlugins(async ({ gw, root }) => {
    const user = await as(gw, { tenant: "acme" });
    const tenantAdmin = await as(gw, { tenant: "acme", roles: ["tenant_admin"] });
    assert.deepEqual(ok(await user.get("/v1/plugins")).plugins, []);

    assertError(await install(user, manifest()), 403, "auth.forbidden");
    assertError(await install(tenantAdmin, manifest()), 403, "auth.forbidden");
    const done = ok(await install(root, manifest()), 201);
    assert.equal(done.plugin.status, "approved");
    assert.deepEqual(done.needs_approval, []);

    const listed = ok(await user.get("/v1/plugins")).plugins;
    assert.deepEqual(listed, [{ ...manifest(), status: "approved", high_risk: [] }]);
    assertError(await call(gw, "GET", "/v1/plugins"), 401, "auth.invalid");
    const [entry] = await audit(gw, root, { action: "plugin." });
    assert.deepEqual([entry.action, entry.target, entry.actor, entry.before], [
      "plugin.install",
      "plugin:weather",
      "root",
      null,
    ]);
  });
});

Deno.test("manifest validation names the field; a tool another plugin provides is refused", async () => {
  await withPlugins(async ({ root }) => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [manifest({ name: "Bad Name" }), "manifest.name"],
      [manifest({ permissions: ["net.ftp"] }), "manifest.permissions.0"],
      [manifest({ tools: ["has space"] }), "manifest.tools.0"],
      [manifest({ tools: [] }), "manifest.tools"],
      [{ ...manifest(), homepage: "https://x" }, "manifest"],
    ];
    for (const [m, param] of cases) {
      assertError(await install(root, m), 400, "request.invalid", param);
    }
    ok(await install(root, manifest()), 201);
    // Reinstalling a plugin is no clash with itself.
    ok(await install(root, manifest({ version: "1.1.0" })), 201);
    const clash = await install(root, manifest({ name: "weather2", tools: ["x", "get_weather"] }));
    assertError(clash, 400, "request.invalid", "manifest.tools");
    assert.match(clash.json.error.message, /weather/);
    const listed = ok(await root.get("/v1/plugins")).plugins;
    assert.deepEqual(listed.map((p: Json) => [p.name, p.version]), [["weather", "1.1.0"]]);
  });
});

Deno.test("a high-risk plugin's tool is denied, even with the permission granted, until approved", async () => {
  await withPlugins(async ({ gw, root }) => {
    const shell = manifest({ name: "shell", tools: ["run_shell"], permissions: ["proc.exec"] });
    const installed = ok(await install(root, shell), 201);
    assert.equal(installed.plugin.status, "pending_approval");
    assert.deepEqual(installed.needs_approval, ["proc.exec"]);
    ok(await grant(root, "acme", ["proc.exec"]));

    const user = await as(gw, { tenant: "acme" });
    const ask = () => chat(user, { tools: [tool("run_shell")] });
    const denied = await ask();
    assertError(denied, 403, "tool.denied", "tools");
    assert.match(denied.json.error.message, /approval/);

    const tenantAdmin = await as(gw, { tenant: "acme", roles: ["tenant_admin"] });
    assertError(
      await tenantAdmin.post("/admin/plugins/shell/approve", { reason: REASON }),
      403,
      "auth.forbidden",
    );
    assertError(
      await root.post("/admin/plugins/nope/approve", { reason: REASON }),
      404,
      "request.invalid",
    );
    ok(await root.post("/admin/plugins/shell/approve", { reason: REASON }));
    const allowed = ok(await ask());
    assert.equal(allowed.message.tool_calls[0].function.name, "run_shell");
    const [listed] = ok(await user.get("/v1/plugins")).plugins;
    assert.deepEqual([listed.status, listed.high_risk], ["approved", ["proc.exec"]]);

    // Another tenant has no grant; an upgrade needs approval again.
    assertError(
      await chat(await as(gw, { tenant: "globex" }), { tools: [tool("run_shell")] }),
      403,
      "tool.denied",
    );
    ok(await install(root, { ...shell, version: "2.0.0" }), 201);
    assertError(await ask(), 403, "tool.denied");
  });
});

Deno.test("a tenant's allow-list refuses every client tool not on it", async () => {
  await withPlugins(async ({ gw }) => {
    const tenantAdmin = await as(gw, { tenant: "acme", roles: ["tenant_admin"] });
    ok(
      await tenantAdmin.put("/admin/tenants/acme/tools", {
        tools: ["get_weather"],
        reason: REASON,
      }),
    );
    const user = await as(gw, { tenant: "acme" });
    ok(await chat(user, { tools: [tool("get_weather")] }));
    const denied = await chat(user, { tools: [tool("get_weather"), tool("send_email")] });
    assertError(denied, 403, "tool.denied", "tools");
    assert.match(denied.json.error.message, /send_email/);
    ok(await chat(await as(gw, { tenant: "globex" }), { tools: [tool("send_email")] }));

    // Unmodified OpenAI clients get their usual permission error.
    const client = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: user.token, maxRetries: 0 });
    await assert.rejects(
      client.chat.completions.create({
        model: "convergio-demo",
        messages: [{ role: "user", content: "mail bob" }],
        tools: [tool("send_email")],
      }),
      (err) => {
        assert.ok(err instanceof OpenAI.PermissionDeniedError);
        assert.equal(err.code, "tool.denied");
        assert.equal(err.param, "tools");
        return true;
      },
    );

    ok(await tenantAdmin.put("/admin/tenants/acme/tools", { tools: [], reason: REASON }));
    assertError(await chat(user, { tools: [tool("get_weather")] }), 403, "tool.denied");
    ok(await chat(user)); // a request without tools is not affected
  });
});

Deno.test("a tool call the model returns that the request did not declare is refused, streamed or not", async () => {
  await withPlugins(async ({ gw, root }) => {
    const user = await as(gw, { tenant: "acme", user: "amy", mode: "managed" });
    const ask = { model: "rogue", messages: [{ role: "user", content: "weather?" }] };

    const plain = await user.post("/v1/chat/completions", ask, "req-rogue-1");
    assertError(plain, 403, "tool.denied");
    assert.match(plain.json.error.message, /get_weather/);
    assert.equal(plain.json.error.type, "permission_error");

    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${user.token}`,
        "content-type": "application/json",
        "x-request-id": "req-rogue-2",
      },
      body: JSON.stringify({ ...ask, stream: true }),
    });
    assert.equal(res.status, 200, "the stream had begun");
    const events = (await readSse(res)).map((e) => e.data);
    const last = JSON.parse(events.at(-1)!);
    assert.equal(last.error.code, "tool.denied");
    assert.ok(!events.some((d) => d.includes("tool_calls")), "the call never reached the client");

    const v7 = await user.post("/v1/chat/stream", { prompt: "weather?", model_hint: "rogue" });
    assert.equal(v7.status, 200);
    assert.match(v7.text, /event: error\ndata: [^\n]*"code":"tool\.denied"/);

    // Declared, the same call goes through: the echo deployment calls the declared tool.
    const declared = ok(
      await user.post("/v1/chat", { prompt: "x", model_hint: "echo", tools: [tool("lookup")] }),
    );
    assert.equal(declared.message.tool_calls[0].function.name, "lookup");

    // Each denial is audited, with the request it came from, and counted.
    const denials = await audit(gw, root, { action: "tool.denied" });
    assert.equal(denials.length, 3);
    const first = denials.find((e: Json) => e.request_id === "req-rogue-1");
    assert.deepEqual(
      [first.actor, first.actor_tenant, first.target, first.after],
      ["amy", "acme", "tenant:acme", {
        tool: "get_weather",
        direction: "response",
        model: "rogue",
      }],
    );
    assert.ok(denials.some((e: Json) => e.request_id === "req-rogue-2"));
    const metrics = await metricsText(gw);
    assert.equal(
      metricValue(metrics, "convergio_tool_denials_total", { direction: "response" }),
      3,
    );
  });
});

Deno.test("usage events carry tool_calls_count, and client-side denials are audited too", async () => {
  await withPlugins(async ({ gw, root }) => {
    const user = await as(gw, { tenant: "acme", user: "amy" });
    ok(await chat(user, { tools: [tool("get_weather")] }, "req-tool"));
    ok(await chat(user, {}, "req-text"));
    const sse = await user.post("/v1/chat/stream", { prompt: "x", tools: [tool("lookup")] });
    assert.match(sse.text, /event: tool\.call/);
    ok(await root.put("/admin/tenants/acme/tools", { tools: ["get_weather"], reason: REASON }));
    assertError(
      await chat(user, { tools: [tool("send_email")] }, "req-denied"),
      403,
      "tool.denied",
    );

    const rows = await ledger(gw);
    assert.equal(rows.get("req-tool")?.tool_calls_count, 1);
    assert.equal(rows.get("req-text")?.tool_calls_count, 0);
    assert.equal(rows.get(sse.headers.get("x-request-id")!)?.tool_calls_count, 1);
    const denied = rows.get("req-denied");
    assert.deepEqual([denied?.success, denied?.error_code, denied?.tool_calls_count], [
      false,
      "tool.denied",
      0,
    ]);

    const [entry] = await audit(gw, root, { action: "tool.denied" });
    assert.deepEqual([entry.request_id, entry.after], ["req-denied", {
      tool: "send_email",
      direction: "request",
      model: "convergio-demo",
    }]);
    assert.match(entry.reason, /allow-list/);
    // A tenant admin sees its tenant's denials.
    const tenantAdmin = await as(gw, { tenant: "acme", roles: ["tenant_admin"] });
    const seen = await audit(gw, tenantAdmin, { action: "tool.denied" });
    assert.deepEqual(seen.map((e: Json) => e.request_id), ["req-denied"]);
  });
});

Deno.test("disable_tools strips tools upstream, so a denied tool no longer matters", async () => {
  await withPlugins(async ({ gw, root, received }) => {
    ok(await root.put("/admin/tenants/acme/tools", { tools: [], reason: REASON }));
    const user = await as(gw, { tenant: "acme", mode: "managed" });
    const ask = () =>
      user.post("/v1/chat", {
        prompt: "mail bob",
        model_hint: "echo",
        tools: [tool("send_email")],
        tool_choice: "auto",
      });
    assertError(await ask(), 403, "tool.denied");
    assert.equal(received.length, 0, "a denied request never goes upstream");

    const applied = ok(await root.post("/admin/mitigations/disable_tools", { reason: REASON }));
    assert.equal(applied.state.actor, "root");
    const served = ok(await ask());
    assert.equal(served.message.content, "plain answer");
    assert.equal(served.usage.tool_calls, 0);
    assert.equal(received.length, 1);
    assert.ok(!("tools" in received[0].body) && !("tool_choice" in received[0].body));
    // The mock answers in text too: it got no tools to call.
    const mock = ok(await chat(user, { tools: [tool("send_email")] }));
    assert.equal(mock.finish_reason, "stop");
    const listed = ok(await root.get("/admin/mitigations")).mitigations.disable_tools;
    assert.equal(listed.active.reason, REASON);

    ok(await root.del(withReason("/admin/mitigations/disable_tools")));
    assertError(await ask(), 403, "tool.denied");
    const actions = (await audit(gw, root, { action: "mitigation." })).map((e: Json) => e.action);
    assert.deepEqual(actions, ["mitigation.revert", "mitigation.apply"]);
  });
});
