import assert from "node:assert/strict";
import { scanText } from "../../scripts/secret_scan.ts";

// Built at run time so that this file does not itself trip the scan.
const fakeGithubToken = "ghp_" + "A1b2C3d4".repeat(4) + "Zz9Y";

Deno.test("secret scan finds a committed credential and names the line", async () => {
  const findings = await scanText(
    "config.ts",
    `const a = 1;\nconst token = "${fakeGithubToken}";\n`,
  );
  assert.equal(findings.length, 1);
  assert.equal(findings[0].line, 2);
  assert.match(findings[0].rule, /github/);
  assert.ok(!findings[0].message.includes(fakeGithubToken), "findings are masked");
});

Deno.test("secret scan passes ordinary code and env: references", async () => {
  assert.deepEqual(await scanText("gw.json", '{"api_key": "env:OPENAI_API_KEY"}'), []);
});

// Each planted secret is assembled at run time, so this file stays clean.
const rand = (n: number, alphabet = "aB3dE5gH7jK9mN1pQ2rS4tU6vW8xY0z") =>
  Array.from({ length: n }, (_, i) => alphabet[(i * 7 + 3) % alphabet.length]).join("");
const PLANTED: Array<[string, string, RegExp]> = [
  ["OpenAI key", `OPENAI_API_KEY=sk-proj-${rand(74)}${"T3Blbk" + "FJ"}${rand(74)}`, /openai/],
  ["Anthropic key", `key: "sk-ant-${"api03"}-${rand(93)}AA"`, /anthropic/],
  [
    "Postgres URL with a password",
    `DATABASE_URL=postgres://app:${rand(20)}@db.internal:5432/ledger`,
    /database-connection-string/,
  ],
  ["literal JWT secret", `{"jwt_secret": "${rand(40)}"}`, /gateway/],
  ["gateway API key", `const k = "cvg_${rand(48, "0123456789abcdef")}";`, /gateway/],
  ["BYOK master key", `BYOK_MASTER_KEYS=v1:${rand(43)}`, /gateway/],
];

for (const [what, line, rule] of PLANTED) {
  Deno.test(`secret scan catches a planted ${what}`, async () => {
    const findings = await scanText("planted.env", `# config\n${line}\n`);
    assert.ok(findings.some((f) => rule.test(f.rule) && f.line === 2), JSON.stringify(findings));
  });
}

Deno.test("secret scan lets fixtures that say what they are pass", async () => {
  assert.deepEqual(
    await scanText("t.ts", `{"jwt_secret": "test-secret-that-is-long-enough-for-hs256"}`),
    [],
  );
  assert.deepEqual(await scanText("t.ts", `"cvg_${"0".repeat(48)}"`), []);
});
