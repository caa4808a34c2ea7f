import assert from "node:assert/strict";
import { base64url } from "jose";
import { loadOrCreateDevSecret } from "../../src/auth/dev_secret.ts";

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "dev_secret_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("dev_secret: creates a 32-byte secret with mode 0o600", async () => {
  await withTempDir(async (dir) => {
    const secret = await loadOrCreateDevSecret(dir);
    assert.ok(secret instanceof Uint8Array);
    assert.equal(secret.length, 32);
    const info = await Deno.stat(`${dir}/jwt-secret`);
    assert.ok(info.isFile);
    if (Deno.build.os !== "windows") {
      assert.equal(info.mode! & 0o777, 0o600);
    }
    // The file holds the base64url-encoded secret.
    const text = await Deno.readTextFile(`${dir}/jwt-secret`);
    assert.deepEqual(base64url.decode(text.trim()), secret);
  });
});

Deno.test("dev_secret: returns the same bytes on a second call", async () => {
  await withTempDir(async (dir) => {
    const first = await loadOrCreateDevSecret(dir);
    const second = await loadOrCreateDevSecret(dir);
    assert.deepEqual(second, first);
  });
});

Deno.test("dev_secret: different data dirs get different secrets", async () => {
  await withTempDir(async (dir) => {
    const a = await loadOrCreateDevSecret(`${dir}/a`);
    const b = await loadOrCreateDevSecret(`${dir}/b`);
    assert.notDeepEqual(a, b);
  });
});

Deno.test("dev_secret: creates the data directory when missing", async () => {
  await withTempDir(async (dir) => {
    const nested = `${dir}/does/not/exist`;
    const secret = await loadOrCreateDevSecret(nested);
    assert.equal(secret.length, 32);
    assert.ok((await Deno.stat(nested)).isDirectory);
    assert.deepEqual(await loadOrCreateDevSecret(nested), secret);
  });
});

Deno.test("dev_secret: an existing secret file is used as is", async () => {
  await withTempDir(async (dir) => {
    const existing = new Uint8Array(32).map((_, i) => i);
    await Deno.writeTextFile(`${dir}/jwt-secret`, base64url.encode(existing) + "\n");
    assert.deepEqual(await loadOrCreateDevSecret(dir), existing);
  });
});

Deno.test("dev_secret: concurrent first calls agree on one secret", async () => {
  await withTempDir(async (dir) => {
    const results = await Promise.all([
      loadOrCreateDevSecret(dir),
      loadOrCreateDevSecret(dir),
      loadOrCreateDevSecret(dir),
    ]);
    assert.deepEqual(results[1], results[0]);
    assert.deepEqual(results[2], results[0]);
    assert.deepEqual(await loadOrCreateDevSecret(dir), results[0]);
  });
});
