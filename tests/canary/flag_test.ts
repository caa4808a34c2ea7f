import assert from "node:assert/strict";
import { AdminApiError, FlagSwitch, parseFlagValue } from "../../src/canary/flag.ts";

interface Call {
  method: string;
  url: string;
  auth: string | null;
  body: Record<string, unknown> | undefined;
}

/** A fake admin API: records calls, answers with `reply(call)` as JSON. */
function adminApi(reply: (c: Call) => [number, unknown] = () => [200, {}]) {
  const calls: Call[] = [];
  const fetch = (url: string, init?: RequestInit) => {
    const call: Call = {
      method: init?.method ?? "GET",
      url,
      auth: new Headers(init?.headers).get("authorization"),
      body: init?.body ? JSON.parse(String(init.body)) : undefined,
    };
    calls.push(call);
    const [status, body] = reply(call);
    return Promise.resolve(
      new Response(typeof body === "string" ? body : JSON.stringify(body), { status }),
    );
  };
  return { calls, fetch };
}

const OPTS = {
  gateway: "http://agg:8080/",
  token: "tok",
  name: "routing_policy",
  value: "cheapest",
  reason: "try cheapest routing",
};

function flags(state: Record<string, unknown>) {
  return {
    flags: {
      routing_policy: { default: "priority", overrides: {}, canary: null, killed: false, ...state },
      voice_mode: { default: "on", overrides: {}, canary: null, killed: false },
    },
  };
}

Deno.test("flag values: JSON when it parses, else the plain string", () => {
  assert.equal(parseFlagValue("cheapest"), "cheapest");
  assert.equal(parseFlagValue("force:openai"), "force:openai");
  assert.deepEqual(parseFlagValue('["net.http","ui.embed"]'), ["net.http", "ui.embed"]);
  assert.equal(parseFlagValue("true"), true);
});

Deno.test("steps PUT the canary percent; promote and rollback POST, all audited with a reason", async () => {
  const api = adminApi();
  const sw = new FlagSwitch(OPTS, api.fetch);
  assert.equal(await sw.apply(5), "PUT /admin/flags/routing_policy/canary percent 5");
  await sw.apply(25);
  assert.match(await sw.promote(), /promote: "cheapest" is the default$/);
  assert.match(await sw.rollback("RB-1: 5xx ratio 9%"), /rollback: canary dropped$/);
  assert.deepEqual(api.calls.map((c) => `${c.method} ${c.url}`), [
    "PUT http://agg:8080/admin/flags/routing_policy/canary",
    "PUT http://agg:8080/admin/flags/routing_policy/canary",
    "POST http://agg:8080/admin/flags/routing_policy/canary/promote",
    "POST http://agg:8080/admin/flags/routing_policy/canary/rollback",
  ]);
  assert.ok(api.calls.every((c) => c.auth === "Bearer tok"));
  assert.deepEqual(api.calls[0].body, {
    percent: 5,
    value: "cheapest",
    reason: "try cheapest routing (step 5%)",
  });
  assert.equal(api.calls[3].body!.reason, "try cheapest routing: rolled back, RB-1: 5xx ratio 9%");
  assert.match(
    sw.describe().join("\n"),
    /PUT \/admin\/flags\/routing_policy\/canary \{"percent":<step>,"value":"cheapest"/,
  );
});

Deno.test("reasons fit the API: whitespace folded, 500 characters at most, 3 at least", async () => {
  const api = adminApi();
  await new FlagSwitch({ ...OPTS, reason: "x" }, api.fetch).rollback("y\n".repeat(400));
  const reason = api.calls[0].body!.reason as string;
  assert.equal(reason.length, 500);
  assert.doesNotMatch(reason, /\n/);
  const short = adminApi();
  await new FlagSwitch({ ...OPTS, reason: "" }, short.fetch).promote();
  assert.ok((short.calls[0].body!.reason as string).length >= 3);
});

Deno.test("rollback with no canary in progress (409) is not an error", async () => {
  const api = adminApi(
    () => [409, { error: { message: "flag routing_policy has no canary in progress" } }],
  );
  assert.match(await new FlagSwitch(OPTS, api.fetch).rollback("x"), /no canary was in progress/);
});

Deno.test("API failures name the call, the status and the gateway's message", async () => {
  const refused = adminApi(() => [400, { error: { message: "value: invalid routing policy" } }]);
  const err = await new FlagSwitch(OPTS, refused.fetch).apply(5).catch((e) => e);
  assert.ok(err instanceof AdminApiError);
  assert.equal(err.status, 400);
  assert.equal(
    err.message,
    "PUT http://agg:8080/admin/flags/routing_policy/canary: HTTP 400 value: invalid routing policy",
  );
  const page = adminApi(() => [502, "<html>bad gateway</html>"]);
  await assert.rejects(
    new FlagSwitch(OPTS, page.fetch).rollback("x"),
    /HTTP 502 <html>bad gateway/,
  );
  const down = (() => Promise.reject(new TypeError("connection refused"))) as typeof fetch;
  await assert.rejects(new FlagSwitch(OPTS, down).promote(), /promote: connection refused$/);
});

Deno.test("preflight refuses unknown or killed flags and another canary in progress", async () => {
  const check = (state: Record<string, unknown>, name = OPTS.name, value: unknown = OPTS.value) => {
    const api = adminApi((c) => {
      assert.equal(`${c.method} ${c.url}`, "GET http://agg:8080/admin/flags");
      return [200, flags(state)];
    });
    return new FlagSwitch({ ...OPTS, name, value }, api.fetch).preflight();
  };
  await check({});
  await check({ canary: { percent: 5, value: "cheapest" } }, OPTS.name, "cheapest");
  await assert.rejects(
    check({}, "nope"),
    /unknown flag nope; flags are routing_policy, voice_mode/,
  );
  await assert.rejects(check({ killed: true }), /is killed/);
  await assert.rejects(
    check({ canary: { percent: 5, value: "force:openai" } }),
    /already has a canary of "force:openai"; promote or roll it back first/,
  );
});
