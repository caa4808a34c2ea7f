import assert from "node:assert/strict";
import { createAzureKeyVaultStore } from "../../src/keys/azure_key_vault.ts";
import { keyRef, type KeyStore } from "../../src/keys/keystore.ts";
import {
  type FakeKeyVault,
  type FakeKeyVaultOptions,
  withFakeKeyVault,
} from "../support/fake_key_vault.ts";
import { testConfig } from "../support/gateway.ts";

const SECRET = "sk-tenant-provider-key-0123456789";
const APP = { tenantId: "contoso-tenant", clientId: "gateway-app", clientSecret: "app-secret-xyz" };
const REF = keyRef("acme", "openai");
const HOUR_S = 3600;

type Auth = "managed_identity" | "client_credentials";

/** `byok.azure` as config parses it, pointed at the fake vault and its token endpoints. */
function azureConfig(vault: FakeKeyVault, auth: Auth, over: Record<string, unknown> = {}) {
  const creds = auth === "client_credentials"
    ? { tenant_id: APP.tenantId, client_id: APP.clientId, client_secret: APP.clientSecret }
    : {};
  return testConfig({
    byok: {
      store: "azure_key_vault",
      azure: {
        vault_url: vault.url,
        auth,
        imds_url: vault.imdsUrl,
        authority_url: vault.authorityUrl,
        ...creds,
        ...over,
      },
    },
  }).byok.azure!;
}

/** A clock both the fake and the store read, starting on a whole second. */
function manualClock() {
  const clock = { t: Date.UTC(2030, 0, 1), now: () => clock.t };
  return clock;
}

interface Ctx {
  vault: FakeKeyVault;
  store: KeyStore;
  clock: ReturnType<typeof manualClock>;
  tokenRequests: () => number;
}

/** A store of this auth mode against a fresh fake vault sharing one manual clock. */
function withStore(
  auth: Auth,
  fn: (ctx: Ctx) => Promise<void>,
  over: Record<string, unknown> = {},
  vaultOpts: FakeKeyVaultOptions = {},
): Promise<void> {
  const clock = manualClock();
  return withFakeKeyVault(async (vault) => {
    const store = createAzureKeyVaultStore(azureConfig(vault, auth, over), { now: clock.now });
    const tokenRequests = () => vault.tokenRequests.imds.length + vault.tokenRequests.entra.length;
    await fn({ vault, store, clock, tokenRequests });
  }, { now: clock.now, app: APP, ...vaultOpts });
}

/** `pending` rejects with an Error matching every pattern and not containing any secret. */
async function assertFails(pending: Promise<unknown>, ...patterns: RegExp[]): Promise<void> {
  await assert.rejects(pending, (err) => {
    assert.ok(err instanceof Error);
    for (const p of patterns) assert.match(err.message, p);
    for (const s of [SECRET, APP.clientSecret]) assert.ok(!err.message.includes(s), err.message);
    return true;
  });
}

for (const auth of ["managed_identity", "client_credentials"] as const) {
  Deno.test(`key vault (${auth}): store, load, replace and remove a secret`, async () => {
    await withStore(auth, async ({ vault, store }) => {
      assert.equal(store.kind, "azure_key_vault");
      assert.equal(await store.store(REF, SECRET), null);
      const kept = vault.secrets.get(REF);
      assert.equal(kept?.value, SECRET);
      assert.equal(kept?.contentType, "application/x-provider-api-key");
      assert.deepEqual(kept?.tags, { owner: "convergio-gateway" });
      assert.equal(await store.load(REF, null), SECRET);

      await store.store(REF, `${SECRET}-new`);
      assert.equal(await store.load(REF, null), `${SECRET}-new`);
      // A vault rotates by itself: nothing to re-wrap.
      assert.equal(await store.rewrap(REF, null), null);

      await store.remove(REF);
      assert.equal(vault.secrets.has(REF), false);
      // Purged, not just soft-deleted: the name is free for the tenant's next key.
      assert.equal(vault.deleted.has(REF), false);
      await assertFails(store.load(REF, null), /key vault get answered 404/, /SecretNotFound/);
      await store.store(REF, SECRET);
      assert.equal(await store.load(REF, null), SECRET);

      assert.deepEqual(vault.calls.map((c) => `${c.method} ${c.path} ${c.status}`), [
        `PUT /secrets/${REF} 200`,
        `GET /secrets/${REF} 200`,
        `PUT /secrets/${REF} 200`,
        `GET /secrets/${REF} 200`,
        `DELETE /secrets/${REF} 200`,
        `DELETE /deletedsecrets/${REF} 204`,
        `GET /secrets/${REF} 404`,
        `PUT /secrets/${REF} 200`,
        `GET /secrets/${REF} 200`,
      ]);
    });
  });

  Deno.test(`key vault (${auth}): one token serves many calls and is renewed before it expires`, async () => {
    await withStore(auth, async ({ store, clock, tokenRequests }) => {
      await store.store(REF, SECRET);
      await store.load(REF, null);
      await store.load(REF, null);
      assert.equal(tokenRequests(), 1);

      // Well inside the hour: the cached token still serves.
      clock.t += 3_500_000;
      await store.load(REF, null);
      assert.equal(tokenRequests(), 1);

      // Within the last minute of its life: renewed before it lapses.
      clock.t += 60_000;
      await store.load(REF, null);
      assert.equal(tokenRequests(), 2);

      // Long after the second token expired (the vault refuses expired tokens): renewed again.
      clock.t += (HOUR_S + 10) * 1000;
      assert.equal(await store.load(REF, null), SECRET);
      assert.equal(tokenRequests(), 3);
    });
  });

  Deno.test(`key vault (${auth}): vault errors surface with their status, never the secret`, async () => {
    await withStore(auth, async ({ vault, store }) => {
      await store.store(REF, SECRET);
      vault.failWith({
        status: 403,
        code: "Forbidden",
        message: "The user, group or application does not have secrets set permission",
      });
      await assertFails(store.store(REF, SECRET), /key vault set answered 403/, /Forbidden/);
      await assertFails(store.remove(REF), /key vault delete answered 403/);
      vault.failWith({ status: 500, code: "InternalServerError", message: "boom" });
      await assertFails(store.load(REF, null), /key vault get answered 500/);
      vault.failWith(undefined);
      assert.equal(await store.load(REF, null), SECRET);

      // A token the vault no longer honours is refused, not retried with the secret in the error.
      vault.revokeTokens();
      await assertFails(store.store(REF, SECRET), /key vault set answered 401/, /Unauthorized/);
    });
  });
}

Deno.test("key vault: the managed identity request is the IMDS one", async () => {
  await withStore("managed_identity", async ({ vault, store }) => {
    await store.store(REF, SECRET);
    assert.equal(vault.tokenRequests.entra.length, 0);
    const [q] = vault.tokenRequests.imds;
    assert.equal(q.get("api-version"), "2018-02-01");
    assert.equal(q.get("resource"), "https://vault.azure.net");
    assert.equal(q.get("client_id"), null);
  });
});

Deno.test("key vault: a user-assigned managed identity names its client_id", async () => {
  await withStore("managed_identity", async ({ vault, store }) => {
    await store.store(REF, SECRET);
    assert.equal(vault.tokenRequests.imds[0].get("client_id"), "user-assigned-id");
  }, { client_id: "user-assigned-id" });
});

Deno.test("key vault: client credentials go to the tenant's Entra ID token endpoint", async () => {
  await withStore("client_credentials", async ({ vault, store }) => {
    await store.store(REF, SECRET);
    assert.equal(vault.tokenRequests.imds.length, 0);
    const [form] = vault.tokenRequests.entra;
    assert.deepEqual(Object.fromEntries(form), {
      grant_type: "client_credentials",
      client_id: APP.clientId,
      client_secret: APP.clientSecret,
      scope: "https://vault.azure.net/.default",
    });
  });
});

Deno.test("key vault: a refused token request fails the call without leaking credentials", async () => {
  await withStore("client_credentials", async ({ vault, store }) => {
    await assertFails(store.store(REF, SECRET), /token endpoint answered 401/);
    assert.equal(vault.calls.length, 0);
    assert.equal(vault.secrets.size, 0);
  }, { client_secret: "wrong-secret" });
  await withStore(
    "managed_identity",
    async ({ vault, store }) => {
      await assertFails(store.load(REF, null), /token endpoint answered 400/);
      assert.equal(vault.tokenRequests.imds.length, 1);
      assert.equal(vault.calls.length, 0);
    },
    {},
    { managedIdentity: false },
  );
});

Deno.test("key vault: removing a secret that is not there succeeds", async () => {
  await withStore("managed_identity", async ({ vault, store }) => {
    await store.remove(REF);
    assert.deepEqual(vault.calls.map((c) => `${c.method} ${c.path} ${c.status}`), [
      `DELETE /secrets/${REF} 404`,
      `DELETE /deletedsecrets/${REF} 404`,
    ]);
  });
});

Deno.test("key vault: every tenant/provider reference is a valid, distinct secret name", async () => {
  const pairs: Array<[string, string]> = [
    ["acme", "openai"],
    ["acme_eu.prod", "open/ai"],
    ["Ünïcode tenant", "azure openai"],
    ["a-b", "c"],
    ["a", "b-c"],
  ];
  const refs = pairs.map(([t, p]) => keyRef(t, p));
  assert.equal(new Set(refs).size, refs.length);
  await withStore("managed_identity", async ({ vault, store }) => {
    for (const [i, ref] of refs.entries()) {
      assert.match(ref, /^[0-9A-Za-z-]{1,127}$/);
      await store.store(ref, `${SECRET}-${i}`);
    }
    for (const [i, ref] of refs.entries()) {
      assert.equal(await store.load(ref, null), `${SECRET}-${i}`);
    }
    assert.equal(vault.secrets.size, refs.length);
  });
});

Deno.test("config: client_credentials needs tenant_id, client_id and client_secret", () => {
  const byok = (azure: Record<string, unknown>) => () =>
    testConfig({ byok: { store: "azure_key_vault", azure } });
  const vault_url = "https://example.vault.azure.net";
  assert.throws(
    byok({ vault_url, auth: "client_credentials", tenant_id: "t", client_id: "c" }),
    /client_credentials needs/,
  );
  assert.throws(() => testConfig({ byok: { store: "azure_key_vault" } }), /byok.azure is required/);
  const parsed = byok({ vault_url })();
  assert.equal(parsed.byok.azure?.auth, "managed_identity");
  assert.equal(parsed.byok.azure?.api_version, "7.4");
});
