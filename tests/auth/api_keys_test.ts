import assert from "node:assert/strict";
import { createApiKeyStore, generateApiKey, hashApiKey } from "../../src/auth/api_keys.ts";
import { DB_KINDS, withDatabase } from "../support/db.ts";

async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

Deno.test("hashApiKey: sha256: prefix plus 64 lowercase hex chars", async () => {
  const hash = await hashApiKey("cvg_example");
  assert.match(hash, /^sha256:[0-9a-f]{64}$/);
});

Deno.test("hashApiKey: matches an independently computed SHA-256", async () => {
  for (const key of ["cvg_example", "", "ünïcödé-key", generateApiKey()]) {
    assert.equal(await hashApiKey(key), `sha256:${await sha256Hex(key)}`);
  }
  // Known vector: SHA-256("abc").
  assert.equal(
    await hashApiKey("abc"),
    "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
});

Deno.test("generateApiKey: starts with cvg_ and two calls differ", () => {
  const a = generateApiKey();
  const b = generateApiKey();
  assert.ok(a.startsWith("cvg_"));
  assert.ok(b.startsWith("cvg_"));
  assert.match(a, /^cvg_[0-9a-f]{48}$/);
  assert.notEqual(a, b);
});

for (const kind of DB_KINDS) {
  Deno.test(`${kind}: API keys are stored hashed and found by the key only`, async () => {
    await withDatabase(kind, async (db) => {
      const store = createApiKeyStore(db.sql);
      const a = await store.create({
        tenant_id: "tenant-a",
        user_id: "user-a",
        roles: ["tenant_admin"],
        mode: "managed",
      });
      const b = await store.create({
        tenant_id: "tenant-b",
        user_id: "user-b",
        roles: ["user"],
        mode: "byok",
      });
      assert.match(a.key, /^cvg_[0-9a-f]{48}$/);
      assert.deepEqual(await store.find(a.key), {
        id: a.id,
        tenant_id: "tenant-a",
        user_id: "user-a",
        roles: ["tenant_admin"],
        mode: "managed",
      });
      assert.equal((await store.find(b.key))?.tenant_id, "tenant-b");
      for (const wrong of [generateApiKey(), "", a.key + " ", a.key.toUpperCase()]) {
        assert.equal(await store.find(wrong), undefined);
      }
      const [row] = await db.sql`SELECT hash FROM api_keys WHERE id = ${a.id}`;
      assert.equal(row.hash, await hashApiKey(a.key));
      assert.equal(await store.find(row.hash), undefined, "the stored hash is not itself a key");
      const all = JSON.stringify(await db.sql`SELECT * FROM api_keys`);
      assert.ok(!all.includes(a.key) && !all.includes(b.key), "no plaintext key is stored");
      await db.sql`UPDATE api_keys SET revoked_at = now() WHERE id = ${a.id}`;
      assert.equal(await store.find(a.key), undefined, "a revoked key no longer logs in");
    });
  });
}
