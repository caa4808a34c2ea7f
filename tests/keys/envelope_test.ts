import assert from "node:assert/strict";
import { base64url } from "jose";
import {
  type Envelope,
  EnvelopeSchema,
  MasterKeys,
  open,
  rewrap,
  seal,
} from "../../src/keys/envelope.ts";

/** A fresh random master key as `v<version>:<base64url>`. */
const masterKey = (version: number, bytes = 32) =>
  `v${version}:${base64url.encode(crypto.getRandomValues(new Uint8Array(bytes)))}`;

const REF = "byok-acme--openai";
const SECRET = "sk-tenant-secret-0123456789";

/** The same base64url field with one byte flipped (`at` < 0 counts from the end). */
function flipped(field: string, at = 0): string {
  const bytes = new Uint8Array(base64url.decode(field));
  bytes[at < 0 ? bytes.length + at : at] ^= 0x01;
  return base64url.encode(bytes);
}

Deno.test("seal then open gives the secret back; the envelope holds no plaintext", async () => {
  const keys = await MasterKeys.parse(masterKey(1));
  const e = await seal(keys, SECRET, REF);
  assert.deepEqual(EnvelopeSchema.parse(e), e);
  assert.equal(e.master_version, 1);
  assert.ok(!JSON.stringify(e).includes(SECRET));
  assert.equal(await open(keys, e, REF), SECRET);
});

Deno.test("sealing twice gives different envelopes (fresh data key and IVs)", async () => {
  const keys = await MasterKeys.parse(masterKey(1));
  const a = await seal(keys, SECRET, REF);
  const b = await seal(keys, SECRET, REF);
  assert.notEqual(a.ciphertext, b.ciphertext);
  assert.notEqual(a.iv, b.iv);
  assert.notEqual(a.wrapped_key, b.wrapped_key);
  assert.notEqual(a.wrap_iv, b.wrap_iv);
});

Deno.test("a tampered envelope does not open", async (t) => {
  const keys = await MasterKeys.parse(masterKey(1));
  const e = await seal(keys, SECRET, REF);
  const cases: Array<[string, Envelope, string]> = [
    ["ciphertext byte flipped", { ...e, ciphertext: flipped(e.ciphertext) }, REF],
    ["ciphertext tag byte flipped", { ...e, ciphertext: flipped(e.ciphertext, -1) }, REF],
    ["iv byte flipped", { ...e, iv: flipped(e.iv) }, REF],
    ["wrapped_key byte flipped", { ...e, wrapped_key: flipped(e.wrapped_key) }, REF],
    ["wrap_iv byte flipped", { ...e, wrap_iv: flipped(e.wrap_iv) }, REF],
    ["opened under another reference", e, "byok-globex--openai"],
  ];
  for (const [name, envelope, aad] of cases) {
    await t.step(name, async () => {
      await assert.rejects(open(keys, envelope, aad));
    });
  }
});

Deno.test("an envelope swapped in from another reference does not open", async () => {
  const keys = await MasterKeys.parse(masterKey(1));
  const mine = await seal(keys, SECRET, REF);
  const theirs = await seal(keys, "sk-other-tenant-key", "byok-globex--openai");
  // Their data key with my ciphertext, and the other way round.
  await assert.rejects(
    open(keys, { ...mine, wrapped_key: theirs.wrapped_key, wrap_iv: theirs.wrap_iv }, REF),
  );
  await assert.rejects(open(keys, theirs, REF));
});

Deno.test("an envelope does not open under another master key of the same version", async () => {
  const e = await seal(await MasterKeys.parse(masterKey(1)), SECRET, REF);
  await assert.rejects(open(await MasterKeys.parse(masterKey(1)), e, REF));
});

Deno.test("MasterKeys.parse refuses bad specs without echoing key material", async (t) => {
  const short = masterKey(1, 16);
  const cases: Array<[string, string, RegExp]> = [
    ["no version prefix", base64url.encode(new Uint8Array(32)), /look like v1:/],
    ["not base64url", "v1:not base64url!", /look like v1:/],
    ["version not a number", "vx:" + masterKey(1).slice(3), /look like v1:/],
    ["16 bytes", short, /master key v1 must be 32 bytes/],
    ["33 bytes", masterKey(2, 33), /master key v2 must be 32 bytes/],
    ["empty", "", /no master key given/],
    ["only commas and spaces", " , ,", /no master key given/],
  ];
  for (const [name, spec, message] of cases) {
    await t.step(name, async () => {
      await assert.rejects(MasterKeys.parse(spec), (err: Error) => {
        assert.match(err.message, message);
        const material = spec.split(":")[1];
        if (material) assert.ok(!err.message.includes(material), err.message);
        return true;
      });
    });
  }
});

Deno.test("MasterKeys.parse takes the highest version as current, whatever the order", async () => {
  const keys = await MasterKeys.parse(` ${masterKey(3)} , ${masterKey(10)},${masterKey(2)} `);
  assert.equal(keys.current, 10);
  assert.equal((await seal(keys, SECRET, REF)).master_version, 10);
  for (const v of [2, 3, 10]) assert.ok(keys.key(v));
  assert.throws(() => keys.key(1), /master key v1 is not loaded/);
});

Deno.test("MasterKeys.parse accepts padded base64url", async () => {
  const raw = crypto.getRandomValues(new Uint8Array(32));
  const padded = `v1:${base64url.encode(raw)}=`;
  const e = await seal(await MasterKeys.parse(padded), SECRET, REF);
  assert.equal(await open(await MasterKeys.parse(`v1:${base64url.encode(raw)}`), e, REF), SECRET);
});

Deno.test("rotation without downtime: load v1+v2, rewrap, then drop v1", async () => {
  const v1 = masterKey(1);
  const v2 = masterKey(2);
  const old = await MasterKeys.parse(v1);
  const both = await MasterKeys.parse(`${v1},${v2}`);
  const onlyV2 = await MasterKeys.parse(v2);

  const e1 = await seal(old, SECRET, REF);
  // With both loaded, v1 envelopes still open, and new ones are sealed under v2.
  assert.equal(await open(both, e1, REF), SECRET);
  assert.equal((await seal(both, "sk-new", REF)).master_version, 2);
  // Dropping v1 before the rewrap would lose the key.
  await assert.rejects(open(onlyV2, e1, REF), /master key v1 is not loaded/);

  const e2 = await rewrap(both, e1, REF);
  assert.equal(e2.master_version, 2);
  assert.notEqual(e2.wrapped_key, e1.wrapped_key);
  assert.notEqual(e2.wrap_iv, e1.wrap_iv);
  assert.equal(e2.ciphertext, e1.ciphertext);
  assert.equal(e2.iv, e1.iv);
  assert.equal(await open(both, e2, REF), SECRET);
  assert.equal(await open(onlyV2, e2, REF), SECRET);
  // A v1-only process cannot open what v2 wraps.
  await assert.rejects(open(old, e2, REF), /master key v2 is not loaded/);

  // Rewrapping what the current key already wraps changes nothing.
  assert.equal(await rewrap(both, e2, REF), e2);
});

Deno.test("rewrap refuses an envelope bound to another reference", async () => {
  const v1 = masterKey(1);
  const e1 = await seal(await MasterKeys.parse(v1), SECRET, REF);
  const both = await MasterKeys.parse(`${v1},${masterKey(2)}`);
  await assert.rejects(rewrap(both, e1, "byok-globex--openai"));
});
