import assert from "node:assert/strict";
import { base64url } from "jose";
import type { Envelope } from "../../src/keys/envelope.ts";
import {
  admin,
  as,
  assertError,
  audit,
  call,
  type Client,
  ok,
  REASON,
  type Reply,
  withReason,
} from "../support/admin_client.ts";
import { freshPostgres } from "../support/db.ts";
import { type FakeKeyVault, withFakeKeyVault } from "../support/fake_key_vault.ts";
import { startGateway, testConfig, type TestGateway, withFullGateway } from "../support/gateway.ts";
import { json, type Received, type Respond, withUpstream } from "../support/recording_upstream.ts";

const PRICE = { input_per_1m: 1, output_per_1m: 2 };
/** The alias served by the OpenAI upstream; its provider config carries no house key. */
const ALIAS = "byok-chat";
const PROVIDER = "up";

/** A key the upstream accepts (it takes any `sk-good-…`), unique per call. */
const goodKey = (label: string) => `sk-good-${label}-${crypto.randomUUID()}`;
/** A key the upstream refuses with 401. */
const revokedKey = () => `sk-revoked-${crypto.randomUUID()}`;

const masterKey = (version: number) =>
  `v${version}:${base64url.encode(crypto.getRandomValues(new Uint8Array(32)))}`;

/** An OpenAI upstream that answers a chat for an accepted key and 401s any other. */
const upstream: Respond = (_req, r) => {
  if (!r.headers.authorization?.startsWith("Bearer sk-good-")) {
    return json(401, {
      error: {
        message: "Incorrect API key provided",
        type: "invalid_request_error",
        param: null,
        code: "invalid_api_key",
      },
    });
  }
  return json(200, {
    id: "chatcmpl-up",
    object: "chat.completion",
    created: 1,
    model: r.body.model,
    choices: [{ index: 0, message: { role: "assistant", content: "hi" }, finish_reason: "stop" }],
    usage: { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 },
  });
};

/** Providers and models for a gateway in front of the upstream, with this `byok` section. */
const gatewayConfig = (origin: string, byok: Record<string, unknown>) => ({
  providers: {
    demo: { protocol: "mock" },
    [PROVIDER]: { protocol: "openai", base_url: origin },
  },
  models: {
    "convergio-demo": { deployments: [{ provider: "demo", model: "demo-large" }], price: PRICE },
    [ALIAS]: { deployments: [{ provider: PROVIDER, model: "gpt-4o-mini" }], price: PRICE },
  },
  byok,
});

interface Ctx {
  gw: TestGateway;
  root: Client;
  received: Received[];
}

/** A full gateway on a fresh ledger in front of a fresh upstream. */
function withByok(byok: Record<string, unknown>, fn: (ctx: Ctx) => Promise<void>) {
  return withUpstream(upstream, (up) =>
    withFullGateway(
      gatewayConfig(up.origin, byok),
      async (gw) => fn({ gw, root: await admin(gw), received: up.received }),
    ));
}

const keyPath = (tenant: string, provider = PROVIDER) =>
  `/admin/tenants/${tenant}/byok-keys/${provider}`;

const setKey = (c: Client, tenant: string, key: string) =>
  c.put(keyPath(tenant), { api_key: key, reason: REASON });

/** A non-streamed OpenAI chat as a user of `tenant` in this lane. */
async function chatAs(gw: TestGateway, tenant: string, mode: "byok" | "managed" = "byok") {
  return await call(gw, "POST", "/v1/chat/completions", {
    token: await gw.token({ tenant, mode }),
    body: { model: ALIAS, messages: [{ role: "user", content: "hello" }] },
  });
}

/** The chat succeeds, and the upstream saw the tenant's own key. */
async function assertServedWith(
  gw: TestGateway,
  received: Received[],
  tenant: string,
  key: string,
) {
  const reply = await chatAs(gw, tenant);
  assert.equal(reply.status, 200, reply.text);
  assert.equal(received.at(-1)?.headers.authorization, `Bearer ${key}`);
}

/** The chat is refused for want of a usable key, without reaching the upstream. */
async function assertMissingKey(gw: TestGateway, received: Received[], tenant: string) {
  const before = received.length;
  assertError(await chatAs(gw, tenant), 403, "byok.missing_key");
  assert.equal(received.length, before);
}

function assertNoLeak(text: string, ...secrets: string[]) {
  for (const s of secrets) assert.ok(!text.includes(s), `a key leaked into: ${text.slice(0, 300)}`);
}

/** What the ledger keeps of each key, by tenant. */
async function stored(gw: TestGateway) {
  const rows = await gw.deps.aggregator!.sql<
    { tenant_id: string; provider: string; key_ref: string; envelope: Envelope | null }[]
  >`SELECT tenant_id, provider, key_ref, envelope FROM byok_keys ORDER BY tenant_id`;
  return Object.fromEntries(rows.map((r) => [r.tenant_id, r]));
}

/** Every answer and audit entry an admin could read about the tenant's keys. */
async function readable(gw: TestGateway, root: Client, tenant: string, ...replies: Reply[]) {
  const list = await root.get(`/admin/tenants/${tenant}/byok-keys`);
  return [list.text, JSON.stringify(await audit(gw, root)), ...replies.map((r) => r.text)].join(
    "\n",
  );
}

Deno.test("BYOK: a tenant's key is kept sealed, used in its BYOK lane only, and never shown back", async () => {
  await withByok({ master_keys: masterKey(1) }, async ({ gw, root, received }) => {
    await assertMissingKey(gw, received, "acme");

    const key = goodKey("acme");
    const put = ok(await setKey(root, "acme", key));
    assert.deepEqual(
      { ...put, request_id: undefined },
      { tenant_id: "acme", provider: PROVIDER, key_ref: "byok-acme--up", request_id: undefined },
    );
    const list = ok(await root.get("/admin/tenants/acme/byok-keys")).keys;
    assert.deepEqual(list.map((k: Record<string, unknown>) => Object.keys(k).sort()), [
      ["created_at", "key_ref", "provider", "updated_at"],
    ]);
    assert.equal(list[0].key_ref, "byok-acme--up");

    const row = (await stored(gw)).acme;
    assert.equal(row.key_ref, "byok-acme--up");
    assert.equal(row.envelope?.master_version, 1);
    assertNoLeak(JSON.stringify(row), key);

    await assertServedWith(gw, received, "acme", key);
    // Another tenant does not get acme's key, and the managed lane does not use it.
    await assertMissingKey(gw, received, "globex");
    const before = received.length;
    assertError(await chatAs(gw, "acme", "managed"), 503, "provider.unavailable");
    assert.equal(received.length, before);

    // A replaced key takes over at once.
    const next = goodKey("acme-2");
    const replaced = await setKey(root, "acme", next);
    ok(replaced);
    await assertServedWith(gw, received, "acme", next);

    // A key the provider refuses is the tenant's problem: byok.missing_key, not an outage.
    const revoked = revokedKey();
    ok(await setKey(root, "acme", revoked));
    assertError(await chatAs(gw, "acme"), 403, "byok.missing_key");
    assert.equal(received.at(-1)?.headers.authorization, `Bearer ${revoked}`);

    ok(await setKey(root, "acme", key));
    await assertServedWith(gw, received, "acme", key);
    const removed = ok(await root.del(withReason(keyPath("acme"))));
    assert.equal(removed.removed, "byok-acme--up");
    assert.deepEqual(await stored(gw), {});
    await assertMissingKey(gw, received, "acme");
    assertError(await root.del(withReason(keyPath("acme"))), 404, "request.invalid");

    const actions = (await audit(gw, root)).map((e: { action: string }) => e.action)
      .filter((a: string) => a.startsWith("byok."));
    assert.deepEqual(actions, ["byok.delete", "byok.set", "byok.set", "byok.set", "byok.set"]);
    const text = await readable(gw, root, "acme", replaced);
    assert.match(text, /byok-acme--up/);
    assertNoLeak(text + JSON.stringify(gw.logs), key, next, revoked);
  });
});

Deno.test("BYOK: keys are only for key-taking providers, and must look like keys", async () => {
  await withByok({ master_keys: masterKey(1) }, async ({ root }) => {
    assertError(
      await root.put(keyPath("acme", "demo"), { api_key: goodKey("x"), reason: REASON }),
      404,
      "request.invalid",
      "provider",
    );
    assertError(
      await root.put(keyPath("acme", "nope"), { api_key: goodKey("x"), reason: REASON }),
      404,
      "request.invalid",
      "provider",
    );
    assertError(await setKey(root, "acme", "short"), 400, "request.invalid");
    assert.deepEqual(ok(await root.get("/admin/tenants/acme/byok-keys")).keys, []);
  });
});

Deno.test("BYOK: a tenant admin manages its own tenant's keys, and no other's", async () => {
  await withByok({ master_keys: masterKey(1) }, async ({ gw, root, received }) => {
    const acmeAdmin = await as(gw, { tenant: "acme", roles: ["tenant_admin"] });
    const acmeUser = await as(gw, { tenant: "acme", roles: ["user"] });
    const key = goodKey("acme");
    const mine = ok(await setKey(acmeAdmin, "acme", key));
    assert.equal(mine.key_ref, "byok-acme--up");
    assert.equal(ok(await acmeAdmin.get("/admin/tenants/acme/byok-keys")).keys.length, 1);
    await assertServedWith(gw, received, "acme", key);

    const theirs = goodKey("globex");
    ok(await setKey(root, "globex", theirs));
    assertError(await setKey(acmeAdmin, "globex", goodKey("evil")), 403, "auth.forbidden");
    assertError(await acmeAdmin.get("/admin/tenants/globex/byok-keys"), 403, "auth.forbidden");
    assertError(await acmeAdmin.del(withReason(keyPath("globex"))), 403, "auth.forbidden");
    assertError(await setKey(acmeUser, "acme", goodKey("user")), 403, "auth.forbidden");
    assertError(
      await acmeAdmin.post("/admin/byok/rotate", { reason: REASON }),
      403,
      "auth.forbidden",
    );
    // globex's key is untouched by all of that.
    await assertServedWith(gw, received, "globex", theirs);

    ok(await acmeAdmin.del(withReason(keyPath("acme"))));
    await assertMissingKey(gw, received, "acme");
  });
});

/**
 * Gateway runs one after another on one ledger and data folder, as restarts
 * of one deployment with different master keys.
 */
async function withRestarts(
  fn: (
    run: (masterKeys: string, fn: (ctx: Ctx) => Promise<void>) => Promise<void>,
  ) => Promise<void>,
) {
  const dataDir = await Deno.makeTempDir({ prefix: "cvg-byok-" });
  const pg = await freshPostgres();
  try {
    await withUpstream(upstream, (up) =>
      fn(async (masterKeys, step) => {
        const gw = await startGateway(testConfig({
          role: "all",
          data_dir: dataDir,
          database_url: pg.url,
          ...gatewayConfig(up.origin, { master_keys: masterKeys }),
          metering: { secret: "test-metering-secret", shutdown_flush_ms: 2_000 },
        }));
        try {
          await step({ gw, root: await admin(gw), received: up.received });
        } finally {
          await gw.close();
        }
      }));
  } finally {
    await pg.drop();
    await Deno.remove(dataDir, { recursive: true });
  }
}

Deno.test("BYOK: master keys rotate without downtime across restarts (v1, v1+v2, v2)", async () => {
  const v1 = masterKey(1);
  const v2 = masterKey(2);
  const keys = { acme: goodKey("acme"), globex: goodKey("globex"), initech: goodKey("initech") };
  const assertAllServed = async ({ gw, received }: Ctx, tenants: Array<keyof typeof keys>) => {
    for (const t of tenants) await assertServedWith(gw, received, t, keys[t]);
  };
  let sealedUnderV1: Record<string, Envelope> = {};

  await withRestarts(async (run) => {
    await run(v1, async (ctx) => {
      ok(await setKey(ctx.root, "acme", keys.acme));
      ok(await setKey(ctx.root, "globex", keys.globex));
      const rows = await stored(ctx.gw);
      sealedUnderV1 = { acme: rows.acme.envelope!, globex: rows.globex.envelope! };
      assert.deepEqual(Object.values(sealedUnderV1).map((e) => e.master_version), [1, 1]);
      await assertAllServed(ctx, ["acme", "globex"]);
    });

    // Dropping v1 before the rotation loses the keys: the reason v1+v2 comes first.
    await run(v2, async ({ gw, received }) => {
      await assertMissingKey(gw, received, "acme");
      const failures = gw.logs.filter((l) => l.msg === "byok key could not be opened");
      assert.ok(failures.length >= 2, JSON.stringify(gw.logs.slice(-5)));
      assert.match(String(failures[0].error), /master key v1 is not loaded/);
    });

    await run(`${v1},${v2}`, async (ctx) => {
      const { gw, root } = ctx;
      await assertAllServed(ctx, ["acme", "globex"]);
      ok(await setKey(root, "initech", keys.initech));
      assert.equal((await stored(gw)).initech.envelope?.master_version, 2);

      assert.equal(ok(await root.post("/admin/byok/rotate", { reason: REASON })).rewrapped, 2);
      const rows = await stored(gw);
      for (const t of ["acme", "globex"]) {
        const before = sealedUnderV1[t];
        const after = rows[t].envelope!;
        assert.equal(after.master_version, 2);
        assert.equal(after.ciphertext, before.ciphertext);
        assert.equal(after.iv, before.iv);
        assert.notEqual(after.wrapped_key, before.wrapped_key);
      }
      assert.equal(rows.initech.envelope?.master_version, 2);
      await assertAllServed(ctx, ["acme", "globex", "initech"]);
      // Nothing left under v1.
      assert.equal(ok(await root.post("/admin/byok/rotate", { reason: REASON })).rewrapped, 0);
      assertError(await root.post("/admin/byok/rotate", {}), 400, "request.invalid");

      const rotations = (await audit(gw, root)).filter((e: { action: string }) =>
        e.action === "byok.rotate"
      );
      assert.deepEqual(rotations.map((e: { after: unknown }) => e.after), [
        { rewrapped: 0 },
        { rewrapped: 2 },
      ]);
    });

    await run(v2, (ctx) => assertAllServed(ctx, ["acme", "globex", "initech"]));
  });
});

Deno.test("BYOK in Azure Key Vault: the vault keeps the secret, the ledger only its reference", async () => {
  await withFakeKeyVault((vault: FakeKeyVault) =>
    withByok({
      store: "azure_key_vault",
      azure: { vault_url: vault.url, auth: "managed_identity", imds_url: vault.imdsUrl },
    }, async ({ gw, root, received }) => {
      await assertMissingKey(gw, received, "acme");
      const key = goodKey("acme");
      const put = ok(await setKey(root, "acme", key));
      assert.equal(put.key_ref, "byok-acme--up");
      assert.equal(vault.secrets.get("byok-acme--up")?.value, key);
      const row = (await stored(gw)).acme;
      assert.equal(row.key_ref, "byok-acme--up");
      assert.equal(row.envelope, null);

      await assertServedWith(gw, received, "acme", key);
      // One managed identity token served the admin write and the edge's read.
      assert.equal(vault.tokenRequests.imds.length, 1);
      // A vault rotates its own keys: nothing to re-wrap.
      assert.equal(ok(await root.post("/admin/byok/rotate", { reason: REASON })).rewrapped, 0);

      assertNoLeak(await readable(gw, root, "acme", put) + JSON.stringify(gw.logs), key);

      ok(await root.del(withReason(keyPath("acme"))));
      assert.equal(vault.secrets.has("byok-acme--up"), false);
      assert.equal(vault.deleted.has("byok-acme--up"), false);
      await assertMissingKey(gw, received, "acme");

      // The purged name is free again for the tenant's next key.
      const next = goodKey("acme-2");
      ok(await setKey(root, "acme", next));
      await assertServedWith(gw, received, "acme", next);
    })
  );
});
