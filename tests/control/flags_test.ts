import assert from "node:assert/strict";
import {
  canaryBucket,
  evaluateFlag,
  type FlagName,
  type FlagState,
  parseFlagValue,
} from "../../src/control/flags.ts";

const tenants = (n: number) => Array.from({ length: n }, (_, i) => `tenant-${i}`);

function state(over: Partial<FlagState> = {}): FlagState {
  return { default: "on", overrides: {}, canary: null, killed: false, ...over };
}

/** The tenants among `ids` that a canary of `percent` on `flag` takes in. */
const inCanary = (flag: FlagName, ids: string[], percent: number) =>
  new Set(ids.filter((t) => canaryBucket(flag, t) < percent));

/** A tenant whose bucket for the flag is exactly `bucket`. */
const tenantInBucket = (flag: FlagName, bucket: number) =>
  tenants(10_000).find((t) => canaryBucket(flag, t) === bucket)!;

Deno.test("a flag with no state gives its spec default", () => {
  assert.deepEqual(evaluateFlag("voice_mode", undefined, "t1"), { value: "on", source: "default" });
  assert.deepEqual(evaluateFlag("routing_policy", undefined, "t1"), {
    value: "priority",
    source: "default",
  });
  assert.deepEqual(evaluateFlag("plugin_permissions", undefined, "t1"), {
    value: [],
    source: "default",
  });
});

Deno.test("precedence: kill switch, then override, then canary, then default", () => {
  const s = state({
    default: "on",
    overrides: { t1: "text-only" },
    canary: { percent: 100, value: "off" },
  });
  assert.deepEqual(evaluateFlag("voice_mode", s, "t1"), { value: "text-only", source: "override" });
  assert.deepEqual(evaluateFlag("voice_mode", s, "t2"), { value: "off", source: "canary" });
  const noCanary = { ...s, canary: { percent: 0, value: "off" } };
  assert.deepEqual(evaluateFlag("voice_mode", noCanary, "t2"), { value: "on", source: "default" });

  const killed = { ...s, default: "text-only", killed: true };
  assert.deepEqual(evaluateFlag("voice_mode", killed, "t1"), { value: "off", source: "killed" });
  assert.deepEqual(evaluateFlag("voice_mode", killed, "t2"), { value: "off", source: "killed" });
});

Deno.test("a kill switch forces each flag's safe value, whatever the stored one", () => {
  const killed = (name: FlagName, value: unknown) =>
    evaluateFlag(name, state({ default: value, overrides: { t: value }, killed: true }), "t").value;
  assert.equal(killed("routing_policy", "cheapest"), "priority");
  assert.equal(killed("metering_mode", "shadow"), "enforced");
  assert.equal(killed("voice_mode", "on"), "off");
  assert.deepEqual(killed("plugin_permissions", ["net.http"]), []);
});

Deno.test("a tenant gets the canary exactly when its bucket is below the percentage", () => {
  const t = tenantInBucket("metering_mode", 37);
  const at = (percent: number) =>
    evaluateFlag(
      "metering_mode",
      state({ default: "enforced", canary: { percent, value: "shadow" } }),
      t,
    ).source;
  assert.equal(at(37), "default");
  assert.equal(at(38), "canary");
});

Deno.test("canaryBucket is stable and in 0..99", () => {
  for (const t of tenants(1_000)) {
    const b = canaryBucket("routing_policy", t);
    assert.ok(Number.isInteger(b) && b >= 0 && b < 100, `${t} → ${b}`);
    assert.equal(canaryBucket("routing_policy", t), b);
  }
});

Deno.test("a widening canary keeps every tenant it already had", () => {
  const ids = tenants(2_000);
  const at10 = inCanary("routing_policy", ids, 10);
  const at50 = inCanary("routing_policy", ids, 50);
  assert.ok(at10.size > 0);
  for (const t of at10) assert.ok(at50.has(t), `${t} left the canary when it grew`);
  assert.ok(at50.size > at10.size * 3, `${at10.size} at 10%, ${at50.size} at 50%`);
});

Deno.test("a 20% canary takes roughly 20% of 10k tenants, for every flag", () => {
  const ids = tenants(10_000);
  for (const flag of ["routing_policy", "metering_mode", "voice_mode", "plugin_permissions"]) {
    const n = inCanary(flag as FlagName, ids, 20).size;
    assert.ok(n >= 1_500 && n <= 2_500, `${flag}: ${n} of 10000 in a 20% canary`);
  }
});

Deno.test("different flags pick different tenants for the same percentage", () => {
  const ids = tenants(10_000);
  const routing = inCanary("routing_policy", ids, 20);
  const voice = inCanary("voice_mode", ids, 20);
  const both = [...routing].filter((t) => voice.has(t)).length;
  // Independent picks overlap on about 20% × 20% = 4% of tenants, not 20%.
  assert.ok(both < 800, `${both} tenants in both canaries`);
});

Deno.test("parseFlagValue accepts each routing policy and names the flag on a bad one", () => {
  for (const v of ["priority", "cheapest", "force:openai", "force:azure-eu.1"]) {
    assert.deepEqual(parseFlagValue("routing_policy", v), { ok: true, value: v });
  }
  for (const v of ["fastest", "force:", "force:a b", 3, null]) {
    const r = parseFlagValue("routing_policy", v);
    assert.equal(r.ok, false, `${v} was accepted`);
    assert.match((r as { message: string }).message, /^routing_policy: /);
  }
});

Deno.test("parseFlagValue refuses an unknown permission or mode", () => {
  const perm = parseFlagValue("plugin_permissions", ["net.http", "root"]);
  assert.equal(perm.ok, false);
  assert.match((perm as { message: string }).message, /^plugin_permissions: /);
  assert.equal(parseFlagValue("plugin_permissions", "net.http").ok, false);
  assert.equal(parseFlagValue("voice_mode", "loud").ok, false);
  assert.equal(parseFlagValue("metering_mode", "off").ok, false);
  assert.deepEqual(parseFlagValue("metering_mode", "shadow"), { ok: true, value: "shadow" });
});

Deno.test("plugin_permissions are deduplicated and sorted", () => {
  assert.deepEqual(
    parseFlagValue("plugin_permissions", ["net.http", "fs.read", "net.http", "fs.read"]),
    { ok: true, value: ["fs.read", "net.http"] },
  );
  assert.deepEqual(parseFlagValue("plugin_permissions", []), { ok: true, value: [] });
});
