import assert from "node:assert/strict";
import { signBody, verifyBody } from "../../src/metering/signature.ts";

const SECRET = "metering-shared-secret";
const BODY = JSON.stringify({ batch_id: "b-1", events: [{ request_id: "r-1" }] });
const NOW = 1_717_000_000_123;

async function hmacHex(secret: string, text: string): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(text));
  return [...new Uint8Array(mac)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

Deno.test("signBody: t=<unix seconds>,v1=<HMAC-SHA256 of '<t>.<body>'>", async () => {
  const header = await signBody(SECRET, BODY, NOW);
  const t = Math.floor(NOW / 1000);
  assert.equal(header, `t=${t},v1=${await hmacHex(SECRET, `${t}.${BODY}`)}`);
  assert.match(header, /^t=\d+,v1=[0-9a-f]{64}$/);
});

Deno.test("verifyBody: a signed body verifies (round trip), also within the tolerance", async () => {
  const header = await signBody(SECRET, BODY, NOW);
  assert.equal(await verifyBody(SECRET, BODY, header, NOW), true);
  assert.equal(await verifyBody(SECRET, BODY, header, NOW + 299_000), true);
  assert.equal(await verifyBody(SECRET, BODY, header, NOW - 299_000), true);
  const empty = await signBody(SECRET, "", NOW);
  assert.equal(await verifyBody(SECRET, "", empty, NOW), true);
  const unicode = JSON.stringify({ user: "ünïcødé ✓" });
  assert.equal(await verifyBody(SECRET, unicode, await signBody(SECRET, unicode, NOW), NOW), true);
});

Deno.test("verifyBody: wrong secret is refused", async () => {
  const header = await signBody(SECRET, BODY, NOW);
  assert.equal(await verifyBody("another-secret", BODY, header, NOW), false);
  assert.equal(await verifyBody(SECRET + "x", BODY, header, NOW), false);
});

Deno.test("verifyBody: a changed body is refused", async () => {
  const header = await signBody(SECRET, BODY, NOW);
  assert.equal(await verifyBody(SECRET, BODY + " ", header, NOW), false);
  assert.equal(await verifyBody(SECRET, BODY.replace("r-1", "r-2"), header, NOW), false);
  assert.equal(await verifyBody(SECRET, "", header, NOW), false);
});

Deno.test("verifyBody: a changed timestamp in the header is refused", async () => {
  const header = await signBody(SECRET, BODY, NOW);
  const t = Math.floor(NOW / 1000);
  const moved = header.replace(`t=${t}`, `t=${t + 1}`);
  assert.notEqual(moved, header);
  assert.equal(await verifyBody(SECRET, BODY, moved, NOW), false);
});

Deno.test("verifyBody: stale timestamps (more than 300 s either way) are refused", async () => {
  const header = await signBody(SECRET, BODY, NOW);
  const t = Math.floor(NOW / 1000) * 1000;
  assert.equal(await verifyBody(SECRET, BODY, header, t + 301_000), false, "too old");
  assert.equal(await verifyBody(SECRET, BODY, header, t - 301_000), false, "from the future");
  assert.equal(await verifyBody(SECRET, BODY, header, t + 3_600_000), false);
  assert.equal(await verifyBody(SECRET, BODY, header, 0), false);
  // Exactly at the tolerance is still accepted.
  assert.equal(await verifyBody(SECRET, BODY, header, t + 300_000), true);
  assert.equal(await verifyBody(SECRET, BODY, header, t - 300_000), true);
});

Deno.test("verifyBody: missing or malformed headers are refused", async () => {
  const header = await signBody(SECRET, BODY, NOW);
  const [tPart, vPart] = header.split(",");
  const hex = vPart.slice(3);
  const malformed = [
    undefined,
    "",
    tPart,
    vPart,
    `${vPart},${tPart}`,
    `${tPart}, ${vPart}`,
    ` ${header}`,
    `${header} `,
    `${header},v1=${hex}`,
    `t=abc,${vPart}`,
    `t=-1,${vPart}`,
    `${tPart},v2=${hex}`,
    `${tPart};${vPart}`,
    header.toUpperCase(),
  ];
  for (const h of malformed) {
    assert.equal(await verifyBody(SECRET, BODY, h, NOW), false, `header ${JSON.stringify(h)}`);
  }
});

Deno.test("verifyBody: non-hex, odd-length, upper-case or truncated signatures are refused", async () => {
  const header = await signBody(SECRET, BODY, NOW);
  const [tPart, vPart] = header.split(",");
  const hex = vPart.slice(3);
  const bad = [
    "zz" + hex.slice(2),
    "g".repeat(64),
    hex.slice(1), // odd length
    hex + "0", // odd length
    hex.toUpperCase(),
    hex.slice(0, 62), // even length, truncated
    hex.slice(0, 2),
    hex + "00",
    "0".repeat(64),
  ];
  for (const v of bad) {
    assert.equal(await verifyBody(SECRET, BODY, `${tPart},v1=${v}`, NOW), false, `v1=${v}`);
  }
});
