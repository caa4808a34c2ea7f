import assert from "node:assert/strict";
import {
  checkUpstream,
  DEFAULT_UPSTREAM,
  parseWeights,
  renderUpstream,
  type UpstreamSpec,
  weightsFor,
} from "../../src/canary/upstream.ts";

const SPEC: UpstreamSpec = {
  ...DEFAULT_UPSTREAM,
  stable: "10.0.1.10:8080",
  canary: "10.0.1.11:8080",
};

Deno.test("weightsFor: stable 100-p, canary p, reduced; a side at 0 gets none", () => {
  assert.deepEqual(weightsFor(5), { stable: 19, canary: 1 });
  assert.deepEqual(weightsFor(25), { stable: 3, canary: 1 });
  assert.deepEqual(weightsFor(50), { stable: 1, canary: 1 });
  assert.deepEqual(weightsFor(33), { stable: 67, canary: 33 });
  assert.deepEqual(weightsFor(0), { stable: 1, canary: 0 });
  assert.deepEqual(weightsFor(100), { stable: 0, canary: 1 });
  for (const bad of [-1, 101, 2.5, NaN]) assert.throws(() => weightsFor(bad), RangeError);
});

Deno.test("renderUpstream: one upstream block, weighted servers, keepalive kept", () => {
  const text = renderUpstream(SPEC, 5, "step 5%");
  assert.match(text, /^# Written by scripts\/canary\.ts \(docs\/canary\.md\): step 5%\.$/m);
  assert.match(text, /^upstream convergio_gateway \{$/m);
  assert.match(
    text,
    /^ {4}server 10\.0\.1\.10:8080 weight=19 max_fails=3 fail_timeout=10s; {2}# stable$/m,
  );
  assert.match(
    text,
    /^ {4}server 10\.0\.1\.11:8080 weight=1 max_fails=3 fail_timeout=10s; {2}# canary$/m,
  );
  assert.match(text, /^ {4}keepalive 64;$/m);
  assert.ok(text.endsWith("}\n"));
  assert.deepEqual(parseWeights(text), { "10.0.1.10:8080": 19, "10.0.1.11:8080": 1 });

  // Rolled back: the canary is gone; promoted: the stable is.
  assert.deepEqual(parseWeights(renderUpstream(SPEC, 0, "rolled back")), { "10.0.1.10:8080": 1 });
  assert.deepEqual(parseWeights(renderUpstream(SPEC, 100, "promoted")), { "10.0.1.11:8080": 1 });

  const bare = renderUpstream({ ...SPEC, serverParams: "", keepalive: 0, name: "gw" }, 50, "x");
  assert.match(bare, /^ {4}server 10\.0\.1\.10:8080 weight=1; {2}# stable$/m);
  assert.match(bare, /^upstream gw \{$/m);
  assert.doesNotMatch(bare, /keepalive/);
});

Deno.test("checkUpstream refuses what could inject nginx config", () => {
  assert.deepEqual(checkUpstream(SPEC), []);
  assert.deepEqual(
    checkUpstream({ ...SPEC, stable: "[::1]:8080", canary: "gw-2.internal:80" }),
    [],
  );
  const problems = checkUpstream({
    name: "a b",
    stable: "1.2.3.4:80; include /etc/passwd",
    canary: "x{",
    serverParams: "max_fails=1; }",
    keepalive: -1,
  });
  assert.equal(problems.length, 5, problems.join("\n"));
  assert.match(checkUpstream({ ...SPEC, canary: SPEC.stable })[0], /the same server/);
});
