import assert from "node:assert/strict";
import { createLogger, redactFields } from "../../src/obs/log.ts";
import { Secret } from "../../src/secret.ts";

Deno.test("credentials are redacted by field name, at any depth, and token counts are kept", () => {
  const out = redactFields({
    authorization: "Bearer abc",
    api_key: "sk-1",
    nested: { jwt_secret: "s", password: "p", access_token: "t", fine: "ok" },
    input_tokens: 12,
    output_tokens: 3,
    key: null,
    list: ["a"],
  });
  assert.deepEqual(out, {
    authorization: "[redacted]",
    api_key: "[redacted]",
    nested: {
      jwt_secret: "[redacted]",
      password: "[redacted]",
      access_token: "[redacted]",
      fine: "ok",
    },
    input_tokens: 12,
    output_tokens: 3,
    key: null,
    list: ["a"],
  });
});

Deno.test("logger writes one JSON object per line with level and time", () => {
  const lines: string[] = [];
  const log = createLogger((l) => lines.push(l), () => 0);
  log.info("hello", { token: "t", n: 1 });
  log.warn("careful");
  log.error("boom", { secret: new Secret("s3cr3t") });
  const parsed = lines.map((l) => JSON.parse(l));
  assert.deepEqual(parsed[0], {
    ts: "1970-01-01T00:00:00.000Z",
    level: "info",
    msg: "hello",
    token: "[redacted]",
    n: 1,
  });
  assert.equal(parsed[1].level, "warn");
  assert.equal(parsed[2].level, "error");
  assert.ok(!lines.join("").includes("s3cr3t"));
});
