import assert from "node:assert/strict";
import { RevocationList } from "../../src/auth/revocation.ts";

const START_MS = 1_700_000_000_000;

function fakeClock() {
  const clock = { t: START_MS, now: () => clock.t };
  return clock;
}

Deno.test("RevocationList: unknown ids are not revoked", () => {
  const list = new RevocationList(fakeClock());
  assert.equal(list.isRevoked("nope"), false);
  assert.equal(list.isRevoked(""), false);
});

Deno.test("RevocationList: a revoked id is revoked until its expiry", () => {
  const clock = fakeClock();
  const list = new RevocationList(clock);
  list.revoke("a", START_MS + 60_000);
  assert.equal(list.isRevoked("a"), true);
  assert.equal(list.isRevoked("b"), false);
  clock.t = START_MS + 59_999;
  assert.equal(list.isRevoked("a"), true);
});

Deno.test("RevocationList: an id is forgotten once its expiry passes", () => {
  const clock = fakeClock();
  const list = new RevocationList(clock);
  list.revoke("a", START_MS + 60_000);
  clock.t = START_MS + 60_000; // exactly at expiry
  assert.equal(list.isRevoked("a"), false);
  clock.t = START_MS + 120_000;
  assert.equal(list.isRevoked("a"), false);
});

Deno.test("RevocationList: an already expired revocation never counts", () => {
  const clock = fakeClock();
  const list = new RevocationList(clock);
  list.revoke("old", START_MS - 1);
  assert.equal(list.isRevoked("old"), false);
});

Deno.test("RevocationList: a later revoke() prunes expired entries", () => {
  const clock = fakeClock();
  const list = new RevocationList(clock);
  list.revoke("short", START_MS + 10_000);
  list.revoke("long", START_MS + 100_000);
  // Peek at the private map size through its only observable effect: entries
  // that are pruned stay gone even if the clock were to move back.
  clock.t = START_MS + 50_000;
  list.revoke("new", START_MS + 200_000);
  assert.equal(list.isRevoked("short"), false);
  assert.equal(list.isRevoked("long"), true);
  assert.equal(list.isRevoked("new"), true);

  clock.t = START_MS; // rewind: "short" would be live again had it not been pruned
  assert.equal(list.isRevoked("short"), false, "expired entry was pruned by revoke()");
  assert.equal(list.isRevoked("long"), true);
});

Deno.test("RevocationList: without a revoke() call an expired entry is only hidden", () => {
  // Documents that pruning happens in revoke(), not in isRevoked().
  const clock = fakeClock();
  const list = new RevocationList(clock);
  list.revoke("a", START_MS + 10_000);
  clock.t = START_MS + 20_000;
  assert.equal(list.isRevoked("a"), false);
  clock.t = START_MS;
  assert.equal(list.isRevoked("a"), true);
});

Deno.test("RevocationList: revoking again updates the expiry", () => {
  const clock = fakeClock();
  const list = new RevocationList(clock);
  list.revoke("a", START_MS + 10_000);
  list.revoke("a", START_MS + 50_000);
  clock.t = START_MS + 20_000;
  assert.equal(list.isRevoked("a"), true);
  clock.t = START_MS + 50_000;
  assert.equal(list.isRevoked("a"), false);
});

Deno.test("a revocation outlives the token's expiry by the grace period", () => {
  let now = 0;
  const list = new RevocationList({ now: () => now }, 30_000);
  list.revoke("j", 1_000);
  now = 20_000;
  assert.equal(list.isRevoked("j"), true);
  now = 31_000;
  assert.equal(list.isRevoked("j"), false);
});
