import assert from "node:assert/strict";
import { type TestGateway, withFullGateway } from "../support/gateway.ts";
import {
  admin,
  as,
  assertError,
  audit,
  call,
  chat,
  type Client,
  type Json,
  ok,
  REASON,
  ROOT,
  withReason,
} from "../support/admin_client.ts";

const CONFIG = { tenant_defaults: { rpm: 1000 } };

/** Tenant A and tenant B, as the platform admin creates them. */
const A = "acme";
const B = "globex";

async function withTenants(fn: (gw: TestGateway, root: Client) => Promise<void>) {
  await withFullGateway(CONFIG, async (gw) => {
    const root = await admin(gw);
    for (const id of [A, B]) {
      ok(await root.put(`/admin/tenants/${id}`, { type: "business", reason: REASON }));
    }
    await fn(gw, root);
  });
}

/** Creates an API key as `by`; its id and plaintext. */
async function newKey(
  by: Client,
  owner: Record<string, unknown>,
): Promise<{ id: string; api_key: string }> {
  return ok(await by.post("/admin/api-keys", owner), 201);
}

/** POST /v1/auth/login with an API key. */
const login = (gw: TestGateway, apiKey: string) =>
  call(gw, "POST", "/v1/auth/login", { body: { api_key: apiKey } });

type Route = [method: string, path: string, body?: unknown];

const manifest = { name: "calc", version: "1.0.0", tools: ["calc_eval"], permissions: [] };

/** Routes only a platform admin may call, with bodies valid enough to reach the role check. */
const PLATFORM_ONLY: Route[] = [
  ["PUT", `/admin/tenants/${A}`, { limits: { rpm: 5 }, reason: REASON }],
  ["DELETE", withReason(`/admin/tenants/${A}`)],
  ["PUT", "/admin/plans/gold", { limits: { rpm: 5 }, reason: REASON }],
  ["PUT", "/admin/models/convergio-demo", {
    price: { input_per_1m: 0, output_per_1m: 0 },
    reason: REASON,
  }],
  ["DELETE", withReason("/admin/models/convergio-demo")],
  ["GET", `/admin/tenants/${A}/budget-override`],
  ["PUT", `/admin/tenants/${A}/budget-override`, { reason: REASON, ttl_s: 60 }],
  ["DELETE", withReason(`/admin/tenants/${A}/budget-override`)],
  ["GET", "/admin/flags"],
  ["GET", `/admin/flags?tenant=${A}`],
  ["PUT", "/admin/flags/voice_mode", { default: "off", reason: REASON }],
  ["PUT", `/admin/flags/voice_mode/overrides/${A}`, { value: "off", reason: REASON }],
  ["DELETE", withReason(`/admin/flags/voice_mode/overrides/${A}`)],
  ["PUT", "/admin/flags/voice_mode/canary", { percent: 50, value: "off", reason: REASON }],
  ["POST", "/admin/flags/voice_mode/canary/promote", { reason: REASON }],
  ["POST", "/admin/flags/voice_mode/canary/rollback", { reason: REASON }],
  ["POST", "/admin/flags/voice_mode/kill", { reason: REASON }],
  ["DELETE", withReason("/admin/flags/voice_mode/kill")],
  ["POST", "/admin/flags/rollback", { reason: REASON }],
  ["GET", "/admin/mitigations"],
  ["POST", "/admin/mitigations/disable_tools", { reason: REASON }],
  ["DELETE", withReason("/admin/mitigations/disable_tools")],
  ["GET", "/admin/audit/verify"],
  ["GET", "/admin/slo"],
  ["POST", "/v1/plugins/install", { manifest, reason: REASON }],
  ["POST", "/admin/plugins/calc/approve", { reason: REASON }],
  ["DELETE", withReason("/admin/plugins/calc")],
];

/** Routes a tenant admin may call for its own tenant; a plain user may not. */
const TENANT_ADMIN: Route[] = [
  ["GET", "/admin/tenants"],
  ["GET", `/admin/tenants/${A}`],
  ["PUT", `/admin/tenants/${A}/tools`, { tools: ["get_weather"], reason: REASON }],
  ["GET", "/admin/plans"],
  ["GET", "/admin/models"],
  ["GET", "/admin/audit"],
  ["GET", "/admin/api-keys"],
  ["POST", "/admin/api-keys", { tenant_id: A, user_id: "carol" }],
  ["POST", "/admin/api-keys/key_unknown/rotate", {}],
  ["DELETE", "/admin/api-keys/key_unknown"],
  ["GET", `/admin/tenants/${A}/export`],
  ["DELETE", `/admin/tenants/${A}/users/carol`],
];

async function assertForbidden(c: Client, routes: Route[]): Promise<void> {
  for (const [method, path, body] of routes) {
    const res = method === "GET"
      ? await c.get(path)
      : method === "DELETE"
      ? await c.del(path)
      : method === "PUT"
      ? await c.put(path, body)
      : await c.post(path, body);
    assert.equal(res.status, 403, `${method} ${path}: ${res.text}`);
    assert.equal(res.json.error.code, "auth.forbidden", `${method} ${path}`);
  }
}

Deno.test("a tenant admin reads and manages its own tenant only", async () => {
  await withTenants(async (gw, root) => {
    const keyB = await newKey(root, { tenant_id: B, user_id: "bob" });
    const ta = await as(gw, { tenant: A, user: "alice", roles: ["tenant_admin"] });

    assertError(await ta.get(`/admin/tenants/${B}`), 403, "auth.forbidden");
    assert.equal(ok(await ta.get(`/admin/tenants/${A}`)).tenant.type, "business");
    assert.deepEqual(ok(await ta.get("/admin/tenants")).tenants.map((t: Json) => t.id), [A]);

    // API keys: its own tenant's, never B's, never an admin key.
    assertError(
      await ta.post("/admin/api-keys", { tenant_id: B, user_id: "mallory" }),
      403,
      "auth.forbidden",
    );
    assertError(
      await ta.post("/admin/api-keys", { tenant_id: A, user_id: "mallory", roles: ["admin"] }),
      403,
      "auth.forbidden",
    );
    const own = await newKey(ta, { tenant_id: A, user_id: "carol", roles: ["tenant_admin"] });
    assertError(await ta.get(`/admin/api-keys?tenant_id=${B}`), 403, "auth.forbidden");
    const listed = ok(await ta.get("/admin/api-keys")).keys;
    assert.deepEqual(listed.map((k: Json) => k.id), [own.id]);
    assertError(await ta.post(`/admin/api-keys/${keyB.id}/rotate`, {}), 404, "request.invalid");
    assertError(await ta.del(`/admin/api-keys/${keyB.id}`), 404, "request.invalid");
    assert.equal((await login(gw, keyB.api_key)).status, 200, "B's key still works");

    // Tool allow-lists: A's, not B's.
    const tools = ok(
      await ta.put(`/admin/tenants/${A}/tools`, { tools: ["get_weather"], reason: REASON }),
    );
    assert.deepEqual(tools.tenant.tools, ["get_weather"]);
    assertError(
      await ta.put(`/admin/tenants/${B}/tools`, { tools: [], reason: REASON }),
      403,
      "auth.forbidden",
    );
    assert.equal(ok(await root.get(`/admin/tenants/${B}`)).tenant.tools, null);

    await assertForbidden(ta, PLATFORM_ONLY);
    assertError(await ta.get(`/admin/audit?tenant=${B}`), 403, "auth.forbidden");

    // The audit log it sees: A's rows, whoever acted, and none of B's.
    const seen = (await audit(gw, ta)).map((e: Json) => [e.action, e.target, e.actor]);
    assert.deepEqual(seen, [
      ["tenant.tools", `tenant:${A}`, "alice"],
      ["api_key.create", `tenant:${A}`, "alice"],
      ["tenant.upsert", `tenant:${A}`, "root"],
    ]);
    const all = (await audit(gw, root)).map((e: Json) => e.target);
    assert.ok(all.includes(`tenant:${B}`), "B's rows exist; the tenant admin just cannot see them");
    // Nothing the refused calls asked for happened.
    assert.equal(all.length, 5);
    assert.equal(ok(await root.get("/admin/flags")).flags.voice_mode.default, "on");
  });
});

Deno.test("a plain user gets 403 on every admin route", async () => {
  await withTenants(async (gw) => {
    const user = await as(gw, { tenant: A, user: "dave" });
    await assertForbidden(user, [...PLATFORM_ONLY, ...TENANT_ADMIN]);
    const noAuth = await call(gw, "GET", "/admin/tenants");
    assertError(noAuth, 401, "auth.invalid");
  });
});

Deno.test("a platform admin manages every tenant, key and the audit log", async () => {
  await withTenants(async (gw, root) => {
    assert.deepEqual(ok(await root.get("/admin/tenants")).tenants.map((t: Json) => t.id).sort(), [
      A,
      B,
    ]);
    ok(await root.put(`/admin/tenants/${B}/tools`, { tools: ["calc"], reason: REASON }));
    const adminKey = await newKey(root, { tenant_id: B, user_id: "ops2", roles: ["admin"] });
    const session = ok(await login(gw, adminKey.api_key));
    const viaKey = await call(gw, "GET", "/admin/flags", { token: session.access_token });
    assert.equal(viaKey.status, 200, "a minted admin key is a platform admin");
    const rotated = ok(await root.post(`/admin/api-keys/${adminKey.id}/rotate`, {}), 201);
    assert.equal(rotated.replaces, adminKey.id);
    ok(await root.del(withReason(`/admin/api-keys/${rotated.id}`)));
    assert.deepEqual(
      ok(await root.get(`/admin/api-keys?tenant_id=${B}`)).keys.map((k: Json) => k.id),
      [adminKey.id, rotated.id],
    );
    const ofB = (await audit(gw, root, { tenant: B })).map((e: Json) => e.action);
    assert.deepEqual(ofB, [
      "api_key.revoke",
      "api_key.rotate",
      "api_key.create",
      "tenant.tools",
      "tenant.upsert",
    ]);
    const verdict = ok(await root.get("/admin/audit/verify"));
    assert.equal(verdict.ok, true);
    assert.equal(verdict.rows, 6);
    assert.match(verdict.head, /^[0-9a-f]{64}$/);
  });
});

Deno.test("API keys: login, rotation kills the old key, revocation kills the new, last use is recorded", async () => {
  await withTenants(async (gw, root) => {
    const key = await newKey(root, { tenant_id: A, user_id: "erin", mode: "managed" });
    const unused = await newKey(root, { tenant_id: A, user_id: "frank" });
    const session = ok(await login(gw, key.api_key));
    const me = ok(await call(gw, "GET", "/v1/me", { token: session.access_token }));
    assert.deepEqual([me.tenant_id, me.user_id, me.mode, me.roles], [A, "erin", "managed", [
      "user",
    ]]);

    const keys = ok(await root.get(`/admin/api-keys?tenant_id=${A}`)).keys;
    const byId = new Map(keys.map((k: Json) => [k.id, k]));
    assert.equal(keys.length, 2);
    assert.ok((byId.get(key.id) as Json).last_used_at, "login records the key's last use");
    assert.equal((byId.get(unused.id) as Json).last_used_at, null);
    assert.ok(!JSON.stringify(keys).includes(key.api_key), "the plaintext is never listed");

    const rotated = ok(await root.post(`/admin/api-keys/${key.id}/rotate`, {}), 201);
    assert.notEqual(rotated.api_key, key.api_key);
    assertError(await login(gw, key.api_key), 401, "auth.invalid");
    const renewed = ok(await login(gw, rotated.api_key));
    const again = ok(await call(gw, "GET", "/v1/me", { token: renewed.access_token }));
    assert.deepEqual([again.user_id, again.mode], ["erin", "managed"], "the owner carries over");
    assertError(await root.post(`/admin/api-keys/${key.id}/rotate`, {}), 409, "request.invalid");

    ok(await root.del(withReason(`/admin/api-keys/${rotated.id}`)));
    assertError(await login(gw, rotated.api_key), 401, "auth.invalid");
    const after = ok(await root.get(`/admin/api-keys?tenant_id=${A}`)).keys;
    assert.deepEqual(
      after.filter((k: Json) => k.revoked_at).map((k: Json) => k.id).sort(),
      [key.id, rotated.id].sort(),
    );
    assertError(await root.del(withReason("/admin/api-keys/key_nope")), 404, "request.invalid");
  });
});

Deno.test("tenant limits set through the admin API apply to the next request", async () => {
  await withTenants(async (gw, root) => {
    const user = await as(gw, { tenant: A });
    ok(await root.put(`/admin/tenants/${A}`, { limits: { rpm: 1 }, reason: REASON }));
    assert.equal(ok(await user.get("/v1/me")).limits.rpm, 1);
    ok(await chat(user));
    assertError(await chat(user), 429, "quota.exceeded");
    const other = await as(gw, { tenant: B });
    ok(await chat(other));
    ok(await chat(other)); // B keeps the defaults
  });
});

Deno.test("a price change through the admin API is what the next response costs", async () => {
  await withTenants(async (gw, root) => {
    const user = await as(gw, { tenant: A });
    const costOf = async () => {
      const u = ok(await chat(user)).usage;
      return { u, cost: u.cost_usd };
    };
    const before = await costOf();
    // testConfig prices convergio-demo at 2 and 8 USD per million tokens.
    assert.equal(before.cost, (before.u.in_tokens * 2 + before.u.out_tokens * 8) / 1e6);

    const put = await root.put("/admin/models/convergio-demo", {
      price: { input_per_1m: 1_000_000, output_per_1m: 3_000_000 },
      reason: REASON,
    });
    assert.deepEqual(ok(put).override.price, { input_per_1m: 1_000_000, output_per_1m: 3_000_000 });
    const after = await costOf();
    assert.equal(after.cost, after.u.in_tokens + after.u.out_tokens * 3);

    ok(await root.del(withReason("/admin/models/convergio-demo")));
    const reset = await costOf();
    assert.equal(reset.cost, (reset.u.in_tokens * 2 + reset.u.out_tokens * 8) / 1e6);

    assertError(
      await root.put("/admin/models/no-such-model", { reason: REASON }),
      400,
      "request.invalid",
      "alias",
    );
    assertError(
      await root.put("/admin/models/convergio-demo", {
        deployments: [{ provider: "nowhere", model: "x" }],
        reason: REASON,
      }),
      400,
      "request.invalid",
      "deployments.0.provider",
    );
  });
});

Deno.test("plans: a new plan's limits apply to the tenants assigned to it; unknown names are refused", async () => {
  await withTenants(async (gw, root) => {
    ok(await root.put("/admin/plans/gold", { limits: { rpm: 2 }, reason: REASON }));
    assert.deepEqual(ok(await root.get("/admin/plans")).plans.gold, { rpm: 2 });
    const assigned = ok(await root.put(`/admin/tenants/${A}`, { plan: "gold", reason: REASON }));
    assert.equal(assigned.tenant.plan, "gold");
    assert.equal(assigned.tenant.type, "business", "a PUT changes only the fields it names");

    const user = await as(gw, { tenant: A });
    assert.equal(ok(await user.get("/v1/me")).limits.rpm, 2);
    ok(await chat(user));
    ok(await chat(user));
    assertError(await chat(user), 429, "quota.exceeded");
    const patched = ok(
      await root.put(`/admin/tenants/${A}`, { limits: { tpm: 50_000 }, reason: REASON }),
    );
    assert.deepEqual([patched.tenant.plan, patched.tenant.limits], ["gold", { tpm: 50_000 }]);

    assertError(
      await root.put(`/admin/tenants/${A}`, { plan: "platinum", reason: REASON }),
      400,
      "request.invalid",
      "plan",
    );
    assertError(
      await root.put(`/admin/tenants/${A}`, { downgrade_model: "no-such-model", reason: REASON }),
      400,
      "request.invalid",
      "downgrade_model",
    );
    assertError(
      await root.put("/admin/plans/silver", { limits: { rpm: -1 }, reason: REASON }),
      400,
      "request.invalid",
      "limits.rpm",
    );
    assert.equal(ok(await root.get(`/admin/tenants/${A}`)).tenant.plan, "gold", "unchanged");
    const [planRow] = await audit(gw, root, { target: "plan:gold" });
    assert.deepEqual(
      [planRow.action, planRow.actor, planRow.reason, planRow.before, planRow.after],
      ["plan.upsert", ROOT.user, REASON, null, { rpm: 2 }],
    );
  });
});
