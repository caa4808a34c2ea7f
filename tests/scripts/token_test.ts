import assert from "node:assert/strict";
import { decodeJwt } from "jose";
import { parseTtl, run } from "../../scripts/token.ts";

Deno.test("deno task token mints a token with the asked claims and TTL", async () => {
  const dataDir = await Deno.makeTempDir();
  try {
    const env = { DATA_DIR: dataDir };
    const token = await run(
      ["--tenant", "acme", "--user", "ann", "--role", "admin", "--mode", "managed", "--ttl", "2h"],
      env,
    );
    const claims = decodeJwt(token);
    assert.equal(claims.sub, "ann");
    assert.equal(claims.tenant_id, "acme");
    assert.deepEqual(claims.roles, ["admin"]);
    assert.equal(claims.mode, "managed");
    assert.equal(claims.exp! - claims.iat!, 7200);
    const plain = decodeJwt(await run(["--tenant", "t", "--user", "u"], env));
    assert.deepEqual(plain.roles, ["user"]);
    assert.equal(plain.mode, "byok");
    assert.equal(plain.exp! - plain.iat!, 3600);
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("deno task token rejects bad flags with a clear message", async () => {
  await assert.rejects(run(["--tenant", "t"], {}), /--tenant and --user are required/);
  await assert.rejects(
    run(["--tenant", "t", "--user", "u", "--mode", "free"], {}),
    /--mode must be/,
  );
  await assert.rejects(
    run(["--tenant", "t", "--user", "u", "--role", "god"], {}),
    /--role must be/,
  );
  await assert.rejects(
    run(["--tenant", "t", "--user", "u", "--ttl", "soon"], {}),
    /--ttl must look like/,
  );
  assert.equal(parseTtl("90"), 90);
  assert.equal(parseTtl("15m"), 900);
  assert.equal(parseTtl("7d"), 604800);
  assert.throws(() => parseTtl("0h"), /--ttl/);
});
