import assert from "node:assert/strict";
import { type TestGateway, withFullGateway } from "../support/gateway.ts";

const SECRET = "admin-ledger-metering-secret";
const A = "tenant-a";
const B = "tenant-b";

function withGateway(fn: (gw: TestGateway) => Promise<void>) {
  return withFullGateway({
    metering: { secret: SECRET, shutdown_flush_ms: 2_000 },
  }, fn);
}

async function call(
  gw: TestGateway,
  method: string,
  path: string,
  token?: string,
  body?: unknown,
) {
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${gw.url}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const bytes = new Uint8Array(await res.arrayBuffer());
  const text = new TextDecoder().decode(bytes);
  const json = res.headers.get("content-type")?.includes("application/json")
    ? JSON.parse(text)
    : undefined;
  return { status: res.status, headers: res.headers, bytes, text, json };
}

async function login(gw: TestGateway, apiKey: string) {
  return await call(gw, "POST", "/v1/auth/login", undefined, { api_key: apiKey });
}

async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function chat(gw: TestGateway, token: string, prompt: string) {
  const res = await call(gw, "POST", "/v1/chat", token, { prompt });
  assert.equal(res.status, 200, res.text);
}

Deno.test("admin: POST /admin/api-keys is scoped by role and the key logs in", async () => {
  await withGateway(async (gw) => {
    const admin = await gw.token({ tenant: "platform", user: "root", roles: ["admin"] });
    const tenantAdmin = await gw.token({ tenant: A, user: "boss", roles: ["tenant_admin"] });
    const user = await gw.token({ tenant: A, user: "alice", roles: ["user"] });

    // A platform admin creates keys for any tenant, with any role.
    const forB = await call(gw, "POST", "/admin/api-keys", admin, {
      tenant_id: B,
      user_id: "bob",
      roles: ["admin", "user"],
      mode: "managed",
    });
    assert.equal(forB.status, 201, forB.text);
    assert.equal(forB.json.tenant_id, B);
    assert.equal(forB.json.user_id, "bob");
    assert.deepEqual(forB.json.roles, ["admin", "user"]);
    assert.equal(forB.json.mode, "managed");
    assert.match(forB.json.id, /^key_/);
    assert.match(forB.json.api_key, /^cvg_[0-9a-f]{48}$/);

    // A tenant admin only for their own tenant, with defaults filled in.
    const forA = await call(gw, "POST", "/admin/api-keys", tenantAdmin, {
      tenant_id: A,
      user_id: "alice",
    });
    assert.equal(forA.status, 201, forA.text);
    assert.deepEqual(forA.json.roles, ["user"]);
    assert.equal(forA.json.mode, "byok");
    const peer = await call(gw, "POST", "/admin/api-keys", tenantAdmin, {
      tenant_id: A,
      user_id: "deputy",
      roles: ["tenant_admin"],
    });
    assert.equal(peer.status, 201, peer.text);

    for (
      const [who, token, body] of [
        ["tenant_admin for B", tenantAdmin, { tenant_id: B, user_id: "x" }],
        ["tenant_admin granting admin", tenantAdmin, {
          tenant_id: A,
          user_id: "x",
          roles: ["admin"],
        }],
        ["user", user, { tenant_id: A, user_id: "x" }],
      ] as const
    ) {
      const res = await call(gw, "POST", "/admin/api-keys", token, body);
      assert.equal(res.status, 403, who);
      assert.equal(res.json.error.code, "auth.forbidden", who);
    }

    for (
      const [what, body, param] of [
        ["missing user_id", { tenant_id: A }, "user_id"],
        ["empty roles", { tenant_id: A, user_id: "x", roles: [] }, "roles"],
        ["unknown role", { tenant_id: A, user_id: "x", roles: ["root"] }, "roles.0"],
        ["bad mode", { tenant_id: A, user_id: "x", mode: "free" }, "mode"],
        ["unknown field", { tenant_id: A, user_id: "x", extra: 1 }, undefined],
        ["not JSON", "{nope", undefined],
      ] as const
    ) {
      const res = await call(gw, "POST", "/admin/api-keys", admin, body);
      assert.equal(res.status, 400, what);
      assert.equal(res.json.error.code, "request.invalid", what);
      if (param) assert.equal(res.json.error.param, param, what);
    }

    const noAuth = await call(gw, "POST", "/admin/api-keys", undefined, {
      tenant_id: A,
      user_id: "x",
    });
    assert.equal(noAuth.status, 401);

    // The keys log in as their owners.
    for (const created of [forB.json, forA.json, peer.json]) {
      const res = await login(gw, created.api_key);
      assert.equal(res.status, 200, res.text);
      assert.equal(res.json.token_type, "Bearer");
      const me = await call(gw, "GET", "/v1/me", res.json.access_token);
      assert.equal(me.status, 200, me.text);
      assert.equal(me.json.tenant_id, created.tenant_id);
      assert.equal(me.json.user_id, created.user_id);
      assert.deepEqual(me.json.roles, created.roles);
      assert.equal(me.json.mode, created.mode);
    }
    const wrong = await login(gw, "cvg_000000000000000000000000000000000000000000000000");
    assert.equal(wrong.status, 401);
    assert.equal(wrong.json.error.code, "auth.invalid");
  });
});

Deno.test("admin: deleting a user pseudonymises their usage and revokes their keys", async () => {
  await withGateway(async (gw) => {
    const admin = await gw.token({ tenant: "platform", user: "root", roles: ["admin"] });
    const tenantAdmin = await gw.token({ tenant: A, user: "boss", roles: ["tenant_admin"] });
    const created = await call(gw, "POST", "/admin/api-keys", tenantAdmin, {
      tenant_id: A,
      user_id: "alice",
    });
    assert.equal(created.status, 201);
    const aliceToken = (await login(gw, created.json.api_key)).json.access_token;
    await chat(gw, aliceToken, "one");
    await chat(gw, aliceToken, "two");
    await chat(gw, await gw.token({ tenant: A, user: "anna" }), "anna's");
    await chat(gw, await gw.token({ tenant: B, user: "alice" }), "another alice, in B");
    await gw.runtime.batcher!.drain();

    // Isolation: a tenant admin of A cannot delete in B; users cannot delete at all.
    const crossTenant = await call(gw, "DELETE", `/admin/tenants/${B}/users/alice`, tenantAdmin);
    assert.equal(crossTenant.status, 403);
    assert.equal(crossTenant.json.error.code, "auth.forbidden");
    const asUser = await call(gw, "DELETE", `/admin/tenants/${A}/users/anna`, aliceToken);
    assert.equal(asUser.status, 403);

    const del = await call(gw, "DELETE", `/admin/tenants/${A}/users/alice`, tenantAdmin);
    assert.equal(del.status, 200, del.text);
    assert.equal(del.json.rows, 2);
    assert.match(del.json.pseudonym, /^anon_[0-9a-f]{24}$/);

    const events = await call(gw, "GET", `/v1/usage/events?tenant_id=${A}`, admin);
    const users = events.json.data.map((e: { user_id: string }) => e.user_id).sort();
    assert.deepEqual(users, [del.json.pseudonym, del.json.pseudonym, "anna"].sort());
    assert.ok(
      events.json.data.every((e: { user_id: string; session_id: string | null }) =>
        e.user_id !== "alice"
      ),
    );
    const byUser = await call(gw, "GET", `/v1/usage/events?tenant_id=${A}&user_id=alice`, admin);
    assert.equal(byUser.json.data.length, 0);
    // B's alice is another person and keeps her name.
    const inB = await call(gw, "GET", `/v1/usage/events?tenant_id=${B}&user_id=alice`, admin);
    assert.equal(inB.json.data.length, 1);
    // The rollups still add up.
    const current = await call(gw, "GET", "/v1/usage/current", tenantAdmin);
    assert.equal(current.json.day.requests, 3);

    const again = await login(gw, created.json.api_key);
    assert.equal(again.status, 401);
    assert.equal(again.json.error.code, "auth.invalid");

    // Stable pseudonym: deleting again finds nothing new, under the same name.
    const twice = await call(gw, "DELETE", `/admin/tenants/${A}/users/alice`, admin);
    assert.equal(twice.status, 200);
    assert.equal(twice.json.rows, 0);
    assert.equal(twice.json.pseudonym, del.json.pseudonym);
  });
});

Deno.test("admin: tenant export as JSONL or CSV carries the body's SHA-256", async () => {
  await withGateway(async (gw) => {
    const admin = await gw.token({ tenant: "platform", user: "root", roles: ["admin"] });
    const tenantAdmin = await gw.token({ tenant: A, user: "boss", roles: ["tenant_admin"] });
    await chat(gw, await gw.token({ tenant: A, user: "alice" }), "one, with a comma");
    await chat(gw, await gw.token({ tenant: A, user: "anna", mode: "managed" }), "two");
    await chat(gw, await gw.token({ tenant: B, user: "bob" }), "three");
    await gw.runtime.batcher!.drain();

    const jsonl = await call(gw, "GET", `/admin/tenants/${A}/export?format=jsonl`, tenantAdmin);
    assert.equal(jsonl.status, 200, jsonl.text);
    assert.equal(jsonl.headers.get("content-type"), "application/x-ndjson");
    assert.equal(jsonl.headers.get("x-checksum-sha256"), await sha256(jsonl.bytes));
    assert.equal(jsonl.headers.get("x-export-rows"), "2");
    assert.match(jsonl.headers.get("content-disposition") ?? "", /usage-tenant-a\.jsonl/);
    const records = jsonl.text.trimEnd().split("\n").map((l) => JSON.parse(l));
    assert.equal(records.length, 2);
    assert.ok(records.every((r) => r.tenant_id === A));
    assert.deepEqual(records.map((r) => r.user_id).sort(), ["alice", "anna"]);
    assert.equal(typeof records[0].cost_usd, "number");

    const byDefault = await call(gw, "GET", `/admin/tenants/${A}/export`, tenantAdmin);
    assert.equal(byDefault.text, jsonl.text);

    const csv = await call(gw, "GET", `/admin/tenants/${A}/export?format=csv`, tenantAdmin);
    assert.equal(csv.status, 200);
    assert.match(csv.headers.get("content-type") ?? "", /^text\/csv/);
    assert.equal(csv.headers.get("x-checksum-sha256"), await sha256(csv.bytes));
    const lines = csv.text.trimEnd().split("\n");
    assert.ok(lines[0].startsWith("request_id,tenant_id,user_id,"));
    assert.equal(lines.length, 3);

    const one = await call(
      gw,
      "GET",
      `/admin/tenants/${A}/export?format=jsonl&user_id=anna`,
      tenantAdmin,
    );
    assert.equal(one.headers.get("x-export-rows"), "1");
    assert.equal(one.headers.get("x-checksum-sha256"), await sha256(one.bytes));
    assert.equal(JSON.parse(one.text).user_id, "anna");

    const bad = await call(gw, "GET", `/admin/tenants/${A}/export?format=xml`, tenantAdmin);
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.code, "request.invalid");

    // Isolation: A's tenant admin cannot export B; a platform admin can.
    const cross = await call(gw, "GET", `/admin/tenants/${B}/export`, tenantAdmin);
    assert.equal(cross.status, 403);
    assert.equal(cross.json.error.code, "auth.forbidden");
    const asUser = await call(
      gw,
      "GET",
      `/admin/tenants/${A}/export`,
      await gw.token({ tenant: A, user: "alice" }),
    );
    assert.equal(asUser.status, 403);
    const adminB = await call(gw, "GET", `/admin/tenants/${B}/export?format=csv`, admin);
    assert.equal(adminB.status, 200);
    assert.equal(adminB.headers.get("x-export-rows"), "1");
    assert.equal(adminB.headers.get("x-checksum-sha256"), await sha256(adminB.bytes));

    const empty = await call(gw, "GET", `/admin/tenants/nobody/export`, admin);
    assert.equal(empty.status, 200);
    assert.equal(empty.text, "");
    assert.equal(empty.headers.get("x-checksum-sha256"), await sha256(new Uint8Array()));
  });
});
