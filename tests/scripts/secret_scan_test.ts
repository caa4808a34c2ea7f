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
