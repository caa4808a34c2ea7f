import assert from "node:assert/strict";
import {
  base64url,
  createLocalJWKSet,
  type CryptoKey,
  exportJWK,
  exportSPKI,
  generateKeyPair,
  type JWK,
  type JWTPayload,
  SignJWT,
} from "jose";
import { RevocationList } from "../../src/auth/revocation.ts";
import { createTokenService, loadJwks } from "../../src/auth/tokens.ts";
import { buildConfigSchema, type Config } from "../../src/config.ts";
import { GatewayError } from "../../src/errors.ts";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const START_MS = 1_700_000_000_000;
const SECRET = new TextEncoder().encode("test-secret-0123456789abcdef-0123456789");
const OTHER_SECRET = new TextEncoder().encode("another-secret-0123456789abcdef-01234");
const IDP_ISSUER = "https://idp.example.com";

type AuthInput = Record<string, unknown>;

function authConfig(auth: AuthInput = {}): Config["auth"] {
  return buildConfigSchema({}).parse({ providers: {}, models: {}, auth }).auth;
}

class FakeClock {
  t = START_MS;
  now = () => this.t;
  /** Seconds since the epoch, as JWT claims use. */
  get s(): number {
    return Math.floor(this.t / 1000);
  }
  advance(ms: number) {
    this.t += ms;
  }
}

function setup(
  auth: AuthInput = {},
  opts: { jwks?: ReturnType<typeof createLocalJWKSet> } = {},
) {
  const clock = new FakeClock();
  const cfg = authConfig(auth);
  const revocations = new RevocationList(clock, cfg.clock_skew_s * 1000);
  const service = createTokenService({
    auth: cfg,
    secret: SECRET,
    jwks: opts.jwks,
    revocations,
    clock,
  });
  return { clock, revocations, auth: cfg, ...service };
}

function isAuthInvalid(err: unknown): boolean {
  return err instanceof GatewayError && err.code === "auth.invalid" && err.status === 401;
}

async function assertRejected(promise: Promise<unknown>, message?: string): Promise<void> {
  await assert.rejects(promise, (err) => isAuthInvalid(err), message);
}

/** An HS256 token with full control over claims (nothing is set implicitly). */
function signHs(
  claims: JWTPayload,
  key: Uint8Array = SECRET,
  header: Record<string, unknown> = {},
): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: "HS256", typ: "JWT", ...header }).sign(key);
}

/** Well-formed claims for a locally issued token, valid at `nowS`. */
function localClaims(nowS: number, extra: Record<string, unknown> = {}): JWTPayload {
  return {
    sub: "user-1",
    tenant_id: "tenant-a",
    roles: ["user"],
    mode: "byok",
    iss: "convergio-gateway",
    iat: nowS,
    nbf: nowS,
    exp: nowS + 300,
    jti: "jti-local-1",
    ...extra,
  } as JWTPayload;
}

function encodeSegment(value: unknown): string {
  return base64url.encode(new TextEncoder().encode(JSON.stringify(value)));
}

function decodeSegment(segment: string): Record<string, unknown> {
  return JSON.parse(new TextDecoder().decode(base64url.decode(segment)));
}

interface TestKey {
  kid: string;
  alg: "RS256" | "ES256" | "EdDSA";
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  jwk: JWK;
}

async function makeKey(alg: TestKey["alg"], kid: string): Promise<TestKey> {
  const { privateKey, publicKey } = alg === "EdDSA"
    ? await generateKeyPair("EdDSA", { crv: "Ed25519" })
    : await generateKeyPair(alg);
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: "sig" };
  return { kid, alg, privateKey, publicKey, jwk };
}

// Keys are generated once for the whole file.
const RSA = await makeKey("RS256", "rsa-1");
const EC = await makeKey("ES256", "ec-1");
const ED = await makeKey("EdDSA", "ed-1");
const UNLISTED_RSA = await makeKey("RS256", "rsa-unlisted");
const JWKS_DOC = { keys: [RSA.jwk, EC.jwk, ED.jwk] };

function jwksSet() {
  return createLocalJWKSet(JWKS_DOC);
}

function externalClaims(nowS: number, extra: JWTPayload = {}): JWTPayload {
  return {
    sub: "ext-user",
    tenant_id: "tenant-ext",
    roles: ["tenant_admin"],
    mode: "managed",
    iss: IDP_ISSUER,
    iat: nowS,
    nbf: nowS,
    exp: nowS + 600,
    jti: "jti-ext-1",
    ...extra,
  };
}

function signExternal(
  key: TestKey,
  claims: JWTPayload,
  kid: string = key.kid,
): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: key.alg, kid, typ: "JWT" })
    .sign(key.privateKey);
}

// ---------------------------------------------------------------------------
// Locally issued HS256 tokens
// ---------------------------------------------------------------------------

Deno.test("mint: a minted HS256 token verifies to the right principal", async () => {
  const { mint, verify, clock } = setup();
  const { token, expires_at } = await mint({
    user_id: "user-42",
    tenant_id: "tenant-x",
    roles: ["admin", "user"],
    mode: "managed",
    ttl_s: 120,
  });
  assert.equal(expires_at, clock.s + 120);
  assert.equal(token.split(".").length, 3);

  const header = decodeSegment(token.split(".")[0]);
  assert.equal(header.alg, "HS256");
  const payload = decodeSegment(token.split(".")[1]);
  assert.equal(typeof payload.jti, "string");

  const principal = await verify(token);
  assert.deepEqual(principal, {
    user_id: "user-42",
    tenant_id: "tenant-x",
    roles: ["admin", "user"],
    mode: "managed",
    jti: payload.jti,
    exp: clock.s + 120,
  });
});

Deno.test("mint: two tokens get distinct jti values", async () => {
  const { mint, verify } = setup();
  const opts = { user_id: "u", tenant_id: "t", roles: ["user" as const], mode: "byok" as const };
  const a = await verify((await mint({ ...opts, ttl_s: 60 })).token);
  const b = await verify((await mint({ ...opts, ttl_s: 60 })).token);
  assert.ok(a.jti && b.jti);
  assert.notEqual(a.jti, b.jti);
});

Deno.test("verify: hand-built HS256 token with defaults for roles and mode", async () => {
  const { verify, clock } = setup();
  const claims = localClaims(clock.s);
  delete claims.roles;
  delete claims.mode;
  const principal = await verify(await signHs(claims));
  assert.deepEqual(principal.roles, ["user"]);
  assert.equal(principal.mode, "byok");
  assert.equal(principal.user_id, "user-1");
  assert.equal(principal.tenant_id, "tenant-a");
});

Deno.test("attack: alg none (unsecured JWT) is rejected", async () => {
  const { verify, clock } = setup({}, { jwks: jwksSet() });
  const header = encodeSegment({ alg: "none", typ: "JWT" });
  const payload = encodeSegment(localClaims(clock.s, { roles: ["admin"] }));
  await assertRejected(verify(`${header}.${payload}.`), "alg none");
  // Variants: capitalised "None" and a junk signature segment.
  const headerCap = encodeSegment({ alg: "None", typ: "JWT" });
  await assertRejected(verify(`${headerCap}.${payload}.`), "alg None");
  await assertRejected(verify(`${header}.${payload}.c2ln`), "alg none with signature");
});

Deno.test("attack: HS/RS confusion with the RSA public key PEM as HMAC secret is rejected", async () => {
  const { verify, clock } = setup({ jwks_algorithms: ["RS256"] }, { jwks: jwksSet() });
  // Sanity: a genuine RS256 token from the same key verifies.
  const genuine = await signExternal(RSA, externalClaims(clock.s));
  assert.equal((await verify(genuine)).user_id, "ext-user");

  const pem = await exportSPKI(RSA.publicKey);
  const pemKey = new TextEncoder().encode(pem);
  const claims = externalClaims(clock.s, { roles: ["admin"] });
  await assertRejected(signHs(claims, pemKey, { kid: RSA.kid }).then(verify), "PEM as secret");
  // With trailing newline stripped, too.
  await assertRejected(
    signHs(claims, new TextEncoder().encode(pem.trim()), { kid: RSA.kid }).then(verify),
    "trimmed PEM as secret",
  );
  // And with the local issuer, so only the key choice could stop it.
  await assertRejected(
    signHs(localClaims(clock.s, { roles: ["admin"] }), pemKey, { kid: RSA.kid }).then(verify),
    "PEM as secret, local issuer",
  );
});

Deno.test("attack: HS/RS confusion with the JWK n value as HMAC secret is rejected", async () => {
  const { verify, clock } = setup({ jwks_algorithms: ["RS256"] }, { jwks: jwksSet() });
  const n = RSA.jwk.n!;
  const claims = localClaims(clock.s, { roles: ["admin"] });
  // n as its base64url text...
  await assertRejected(
    signHs(claims, new TextEncoder().encode(n), { kid: RSA.kid }).then(verify),
    "n text as secret",
  );
  // ...and as the raw modulus bytes.
  await assertRejected(
    signHs(claims, base64url.decode(n), { kid: RSA.kid }).then(verify),
    "n bytes as secret",
  );
  // HS384/HS512 headers never reach any verifier either.
  const hs512 = await new SignJWT(claims).setProtectedHeader({ alg: "HS512", kid: RSA.kid })
    .sign(new TextEncoder().encode(n));
  await assertRejected(verify(hs512), "HS512");
});

Deno.test("attack: tampered payload (tenant_id changed, signature kept) is rejected", async () => {
  const { mint, verify } = setup();
  const { token } = await mint({
    user_id: "u1",
    tenant_id: "tenant-a",
    roles: ["user"],
    mode: "byok",
    ttl_s: 300,
  });
  // The original verifies.
  assert.equal((await verify(token)).tenant_id, "tenant-a");
  const [h, p, s] = token.split(".");
  const payload = decodeSegment(p);
  payload.tenant_id = "tenant-b";
  await assertRejected(verify(`${h}.${encodeSegment(payload)}.${s}`), "tenant changed");
  payload.tenant_id = "tenant-a";
  payload.roles = ["admin"];
  await assertRejected(verify(`${h}.${encodeSegment(payload)}.${s}`), "roles changed");
});

Deno.test("attack: tampered signature is rejected", async () => {
  const { mint, verify } = setup();
  const { token } = await mint({
    user_id: "u1",
    tenant_id: "tenant-a",
    roles: ["user"],
    mode: "byok",
    ttl_s: 300,
  });
  const [h, p, s] = token.split(".");
  // Change the first character: alters the high bits of the first byte.
  const flipped = (s[0] === "A" ? "B" : "A") + s.slice(1);
  await assertRejected(verify(`${h}.${p}.${flipped}`), "first char flipped");
  // Reversed signature.
  await assertRejected(verify(`${h}.${p}.${s.split("").reverse().join("")}`), "reversed");
  // Truncated signature.
  await assertRejected(verify(`${h}.${p}.${s.slice(0, -4)}`), "truncated");
  // Signature removed.
  await assertRejected(verify(`${h}.${p}.`), "empty signature");
});

Deno.test("attack: token signed with a different HS256 secret is rejected", async () => {
  const { verify, clock } = setup();
  await assertRejected(verify(await signHs(localClaims(clock.s), OTHER_SECRET)));
});

Deno.test("expiry: expired beyond skew rejected, within skew accepted", async () => {
  const { mint, verify, clock } = setup({ clock_skew_s: 30 });
  const { token, expires_at } = await mint({
    user_id: "u1",
    tenant_id: "t1",
    roles: ["user"],
    mode: "byok",
    ttl_s: 60,
  });
  clock.t = expires_at * 1000 + 20_000; // 20 s past exp, within 30 s skew
  const principal = await verify(token);
  assert.equal(principal.user_id, "u1");
  assert.equal(principal.exp, expires_at);

  clock.t = expires_at * 1000 + 40_000; // 40 s past exp, beyond skew
  await assertRejected(verify(token), "expired beyond skew");
});

Deno.test("expiry: with zero skew a token is rejected at exp", async () => {
  const { mint, verify, clock } = setup({ clock_skew_s: 0 });
  const { token, expires_at } = await mint({
    user_id: "u1",
    tenant_id: "t1",
    roles: ["user"],
    mode: "byok",
    ttl_s: 60,
  });
  clock.t = expires_at * 1000 - 1000;
  await verify(token);
  clock.t = expires_at * 1000;
  await assertRejected(verify(token), "at exp");
});

Deno.test("nbf: not-before in the future beyond skew is rejected, within skew accepted", async () => {
  const { verify, clock } = setup({ clock_skew_s: 30 });
  const far = await signHs(localClaims(clock.s, { nbf: clock.s + 60, exp: clock.s + 600 }));
  await assertRejected(verify(far), "nbf 60 s ahead");
  const near = await signHs(localClaims(clock.s, { nbf: clock.s + 20, exp: clock.s + 600 }));
  assert.equal((await verify(near)).user_id, "user-1");
  // Once the clock reaches nbf the far token is fine too.
  clock.advance(60_000);
  assert.equal((await verify(far)).user_id, "user-1");
});

Deno.test("aud: wrong aud rejected, missing aud rejected, correct aud accepted", async () => {
  const { verify, mint, clock } = setup({ audience: "gateway-api" });
  await assertRejected(
    verify(await signHs(localClaims(clock.s, { aud: "someone-else" }))),
    "wrong aud",
  );
  await assertRejected(verify(await signHs(localClaims(clock.s))), "missing aud");
  const ok = await verify(await signHs(localClaims(clock.s, { aud: "gateway-api" })));
  assert.equal(ok.user_id, "user-1");
  const okArray = await verify(
    await signHs(localClaims(clock.s, { aud: ["other", "gateway-api"] })),
  );
  assert.equal(okArray.user_id, "user-1");
  // mint() sets the configured audience.
  const { token } = await mint({
    user_id: "u",
    tenant_id: "t",
    roles: ["user"],
    mode: "byok",
    ttl_s: 60,
  });
  assert.equal(decodeSegment(token.split(".")[1]).aud, "gateway-api");
  assert.equal((await verify(token)).user_id, "u");
});

Deno.test("aud: external tokens must carry the configured audience too", async () => {
  const { verify, clock } = setup({ audience: "gateway-api" }, { jwks: jwksSet() });
  await assertRejected(verify(await signExternal(RSA, externalClaims(clock.s))), "missing aud");
  await assertRejected(
    verify(await signExternal(RSA, externalClaims(clock.s, { aud: "nope" }))),
    "wrong aud",
  );
  const ok = await verify(await signExternal(RSA, externalClaims(clock.s, { aud: "gateway-api" })));
  assert.equal(ok.user_id, "ext-user");
});

Deno.test("iss: HS token with the right secret but another issuer is rejected", async () => {
  const { verify, clock } = setup({ issuer: "my-gateway" });
  await assertRejected(
    verify(await signHs(localClaims(clock.s, { iss: "convergio-gateway" }))),
    "default issuer when another configured",
  );
  await assertRejected(verify(await signHs(localClaims(clock.s, { iss: "evil" }))), "evil iss");
  const noIss = localClaims(clock.s);
  delete noIss.iss;
  await assertRejected(verify(await signHs(noIss)), "missing iss");
  const ok = await verify(await signHs(localClaims(clock.s, { iss: "my-gateway" })));
  assert.equal(ok.user_id, "user-1");
});

Deno.test("iss: jwks_issuer is enforced for external tokens", async () => {
  const { verify, clock } = setup({ jwks_issuer: IDP_ISSUER }, { jwks: jwksSet() });
  const ok = await verify(await signExternal(RSA, externalClaims(clock.s)));
  assert.equal(ok.user_id, "ext-user");
  await assertRejected(
    verify(await signExternal(RSA, externalClaims(clock.s, { iss: "https://evil.example" }))),
    "wrong iss",
  );
  // The gateway's own issuer is not a valid external issuer.
  await assertRejected(
    verify(await signExternal(EC, externalClaims(clock.s, { iss: "convergio-gateway" }))),
    "local issuer on external token",
  );
  const noIss = externalClaims(clock.s);
  delete noIss.iss;
  await assertRejected(verify(await signExternal(ED, noIss)), "missing iss");
});

// ---------------------------------------------------------------------------
// External (JWKS) tokens
// ---------------------------------------------------------------------------

for (const key of [RSA, EC, ED]) {
  Deno.test(`jwks: ${key.alg} external token is accepted with correct claims`, async () => {
    const { verify, clock } = setup({ jwks_issuer: IDP_ISSUER }, { jwks: jwksSet() });
    const token = await signExternal(key, externalClaims(clock.s, { jti: `jti-${key.kid}` }));
    assert.equal(decodeSegment(token.split(".")[0]).alg, key.alg);
    const principal = await verify(token);
    assert.deepEqual(principal, {
      user_id: "ext-user",
      tenant_id: "tenant-ext",
      roles: ["tenant_admin"],
      mode: "managed",
      jti: `jti-${key.kid}`,
      exp: clock.s + 600,
    });
  });
}

Deno.test("jwks: external token without jti verifies with no jti", async () => {
  const { verify, clock } = setup({}, { jwks: jwksSet() });
  const claims = externalClaims(clock.s);
  delete claims.jti;
  const principal = await verify(await signExternal(EC, claims));
  assert.equal(principal.jti, undefined);
  assert.equal(principal.user_id, "ext-user");
});

Deno.test("jwks: RS256 token whose kid is not in the set is rejected", async () => {
  const { verify, clock } = setup({}, { jwks: jwksSet() });
  await assertRejected(
    verify(await signExternal(UNLISTED_RSA, externalClaims(clock.s))),
    "unknown kid, unknown key",
  );
  // A listed kid but signed with a key that is not the listed one.
  await assertRejected(
    verify(await signExternal(UNLISTED_RSA, externalClaims(clock.s), RSA.kid)),
    "listed kid, wrong key",
  );
});

Deno.test("jwks: algorithm outside jwks_algorithms is rejected", async () => {
  const { verify, clock } = setup({ jwks_algorithms: ["ES256"] }, { jwks: jwksSet() });
  // ES256 still works...
  assert.equal((await verify(await signExternal(EC, externalClaims(clock.s)))).user_id, "ext-user");
  // ...but a perfectly valid RS256 or EdDSA token does not.
  await assertRejected(verify(await signExternal(RSA, externalClaims(clock.s))), "RS256");
  await assertRejected(verify(await signExternal(ED, externalClaims(clock.s))), "EdDSA");
});

Deno.test("jwks: external algorithms are rejected when no JWKS is configured", async () => {
  const { verify, clock } = setup();
  await assertRejected(verify(await signExternal(RSA, externalClaims(clock.s))), "RS256");
  await assertRejected(verify(await signExternal(EC, externalClaims(clock.s))), "ES256");
});

Deno.test("jwks: an external token signed with ES256 but labelled RS256 is rejected", async () => {
  const { verify, clock } = setup({}, { jwks: jwksSet() });
  const token = await signExternal(EC, externalClaims(clock.s));
  const [, p, s] = token.split(".");
  const header = encodeSegment({ alg: "RS256", kid: RSA.kid, typ: "JWT" });
  await assertRejected(verify(`${header}.${p}.${s}`));
});

Deno.test("loadJwks: reads a key set from jwks_file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "jwks_test_" });
  try {
    const file = await Deno.makeTempFile({ dir, suffix: ".json" });
    await Deno.writeTextFile(file, JSON.stringify(JWKS_DOC));
    const auth = authConfig({ jwks_file: file, jwks_issuer: IDP_ISSUER });
    const jwks = await loadJwks(auth);
    assert.ok(jwks, "a key set is returned");

    const clock = new FakeClock();
    const { verify } = createTokenService({
      auth,
      secret: SECRET,
      jwks,
      revocations: new RevocationList(clock),
      clock,
    });
    for (const key of [RSA, EC, ED]) {
      const p = await verify(await signExternal(key, externalClaims(clock.s)));
      assert.equal(p.user_id, "ext-user");
      assert.equal(p.tenant_id, "tenant-ext");
    }
    await assertRejected(
      verify(await signExternal(UNLISTED_RSA, externalClaims(clock.s))),
      "key not in file",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadJwks: returns undefined when neither jwks_url nor jwks_file is set", async () => {
  assert.equal(await loadJwks(authConfig()), undefined);
});

Deno.test("loadJwks: jwks_url gives a remote key set without fetching yet", async () => {
  const jwks = await loadJwks(authConfig({ jwks_url: "https://idp.example.com/.well-known/jwks" }));
  assert.equal(typeof jwks, "function");
});

// ---------------------------------------------------------------------------
// Claims
// ---------------------------------------------------------------------------

Deno.test("claims: missing tenant_id, sub or exp is rejected", async () => {
  const { verify, clock } = setup();
  for (const claim of ["tenant_id", "sub", "exp"] as const) {
    const claims = localClaims(clock.s);
    delete claims[claim];
    await assertRejected(verify(await signHs(claims)), `missing ${claim}`);
  }
  // Empty strings are as good as missing.
  await assertRejected(verify(await signHs(localClaims(clock.s, { tenant_id: "" }))), "empty tid");
  await assertRejected(verify(await signHs(localClaims(clock.s, { sub: "" }))), "empty sub");
});

Deno.test("claims: missing external tenant_id, sub or exp is rejected", async () => {
  const { verify, clock } = setup({}, { jwks: jwksSet() });
  for (const claim of ["tenant_id", "sub", "exp"] as const) {
    const claims = externalClaims(clock.s);
    delete claims[claim];
    await assertRejected(verify(await signExternal(RSA, claims)), `missing ${claim}`);
  }
});

Deno.test("claims: wrongly typed claims are rejected", async () => {
  const { verify, clock } = setup();
  await assertRejected(verify(await signHs(localClaims(clock.s, { tenant_id: 42 }))), "tid num");
  await assertRejected(verify(await signHs(localClaims(clock.s, { roles: "admin" }))), "roles str");
  await assertRejected(verify(await signHs(localClaims(clock.s, { exp: "never" }))), "exp str");
  await assertRejected(verify(await signHs(localClaims(clock.s, { jti: 7 }))), "jti num");
});

Deno.test("claims: invalid mode value is rejected", async () => {
  const { verify, clock } = setup();
  await assertRejected(verify(await signHs(localClaims(clock.s, { mode: "free" }))), "free");
  await assertRejected(verify(await signHs(localClaims(clock.s, { mode: "BYOK" }))), "BYOK");
  await assertRejected(verify(await signHs(localClaims(clock.s, { mode: "" }))), "empty");
});

Deno.test("claims: unknown role is rejected", async () => {
  const { verify, clock } = setup();
  await assertRejected(verify(await signHs(localClaims(clock.s, { roles: ["root"] }))), "root");
  await assertRejected(
    verify(await signHs(localClaims(clock.s, { roles: ["user", "superuser"] }))),
    "mixed",
  );
  await assertRejected(verify(await signHs(localClaims(clock.s, { roles: ["Admin"] }))), "case");
});

Deno.test("malformed: garbage strings are rejected", async () => {
  const { verify } = setup({}, { jwks: jwksSet() });
  for (
    const bad of [
      "abc",
      "a.b",
      "",
      "a.b.c",
      "...",
      "a.b.c.d.e",
      "Bearer abc",
      `${encodeSegment({ alg: "HS256" })}`,
      `${encodeSegment({ alg: "HS256" })}.not-json.sig`,
      `${encodeSegment([1, 2])}.e30.`,
      "eyJhbGciOiJIUzI1NiJ9.%%%%.abc",
    ]
  ) {
    await assertRejected(verify(bad), `malformed ${JSON.stringify(bad)}`);
  }
});

// ---------------------------------------------------------------------------
// Revocation through verify()
// ---------------------------------------------------------------------------

Deno.test("revocation: revoked jti is rejected", async () => {
  const { mint, verify, revocations } = setup();
  const opts = { user_id: "u", tenant_id: "t", roles: ["user" as const], mode: "byok" as const };
  const a = await mint({ ...opts, ttl_s: 300 });
  const b = await mint({ ...opts, ttl_s: 300 });
  const pa = await verify(a.token);
  revocations.revoke(pa.jti!, pa.exp! * 1000);
  await assertRejected(verify(a.token), "revoked");
  // Other tokens are unaffected.
  assert.equal((await verify(b.token)).user_id, "u");
});

Deno.test("revocation: revoked external token is rejected", async () => {
  const { verify, revocations, clock } = setup({}, { jwks: jwksSet() });
  const token = await signExternal(ED, externalClaims(clock.s));
  const p = await verify(token);
  revocations.revoke(p.jti!, p.exp! * 1000);
  await assertRejected(verify(token));
});

Deno.test("revocation: a revoked token stays rejected inside the clock-skew window after exp", async () => {
  // Logout revokes with exp*1000 (src/api/auth_routes.ts), but verify() keeps
  // accepting the token for clock_skew_s after exp. A revoked token must not
  // come back to life in that window.
  const { mint, verify, revocations, clock } = setup({ clock_skew_s: 30 });
  const { token } = await mint({
    user_id: "u",
    tenant_id: "t",
    roles: ["user"],
    mode: "byok",
    ttl_s: 60,
  });
  const p = await verify(token);
  revocations.revoke(p.jti!, p.exp! * 1000);
  await assertRejected(verify(token), "revoked before exp");
  clock.t = p.exp! * 1000 + 20_000; // past exp, but within the 30 s skew
  await assertRejected(verify(token), "revoked token accepted again within skew");
});
