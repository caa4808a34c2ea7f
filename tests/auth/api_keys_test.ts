import assert from "node:assert/strict";
import {
  type ApiKeyRecord,
  createApiKeyIndex,
  generateApiKey,
  hashApiKey,
} from "../../src/auth/api_keys.ts";
import { buildConfigSchema } from "../../src/config.ts";

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

Deno.test("hashApiKey: output passes the config schema's hash check", async () => {
  const hash = await hashApiKey(generateApiKey());
  const auth = buildConfigSchema({}).parse({
    providers: {},
    models: {},
    auth: { api_keys: [{ id: "k1", hash, tenant_id: "t1", user_id: "u1" }] },
  }).auth;
  assert.equal(auth.api_keys[0].hash, hash);
  assert.deepEqual(auth.api_keys[0].roles, ["user"]);
  assert.equal(auth.api_keys[0].mode, "byok");
});

Deno.test("generateApiKey: starts with cvg_ and two calls differ", () => {
  const a = generateApiKey();
  const b = generateApiKey();
  assert.ok(a.startsWith("cvg_"));
  assert.ok(b.startsWith("cvg_"));
  assert.match(a, /^cvg_[0-9a-f]{48}$/);
  assert.notEqual(a, b);
});

Deno.test("createApiKeyIndex: finds the record for the right key only", async () => {
  const keyA = generateApiKey();
  const keyB = generateApiKey();
  const records: ApiKeyRecord[] = [
    {
      id: "key-a",
      hash: await hashApiKey(keyA),
      tenant_id: "tenant-a",
      user_id: "user-a",
      roles: ["tenant_admin"],
      mode: "managed",
    },
    {
      id: "key-b",
      hash: await hashApiKey(keyB),
      tenant_id: "tenant-b",
      user_id: "user-b",
      roles: ["user"],
      mode: "byok",
    },
  ];
  const index = createApiKeyIndex(records);
  assert.equal(await index.find(keyA), records[0]);
  assert.equal(await index.find(keyB), records[1]);
  assert.equal(await index.find(generateApiKey()), undefined);
  assert.equal(await index.find(""), undefined);
  assert.equal(await index.find(keyA + " "), undefined);
  assert.equal(await index.find(keyA.toUpperCase()), undefined);
  // The stored hash is not itself a key.
  assert.equal(await index.find(records[0].hash), undefined);
});

Deno.test("createApiKeyIndex: an empty index finds nothing", async () => {
  const index = createApiKeyIndex([]);
  assert.equal(await index.find(generateApiKey()), undefined);
});
