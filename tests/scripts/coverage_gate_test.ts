import assert from "node:assert/strict";
import { coverageByFolder } from "../../scripts/coverage_gate.ts";

const record = (path: string, found: number, hit: number) =>
  `TN:\nSF:${path}\nDA:1,1\nLF:${found}\nLH:${hit}\nend_of_record\n`;

const LCOV = [
  record("/repo/src/api/a.ts", 100, 95),
  record("/repo/src/api/b.ts", 100, 75),
  record("/repo/src/main.ts", 10, 10),
  record("/repo/src/keys/envelope.ts", 50, 50),
  record("/repo/scripts/token.ts", 40, 0),
].join("");

Deno.test("coverage gate: lines add up per src/ folder; other trees are left out", () => {
  assert.deepEqual(coverageByFolder(LCOV), [
    { folder: "src", found: 10, hit: 10, percent: 100 },
    { folder: "src/api", found: 200, hit: 170, percent: 85 },
    { folder: "src/keys", found: 50, hit: 50, percent: 100 },
  ]);
});

async function gate(lcov: string) {
  const file = await Deno.makeTempFile({ suffix: ".lcov" });
  await Deno.writeTextFile(file, lcov);
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      new URL("../../scripts/coverage_gate.ts", import.meta.url).pathname,
      file,
      "90",
    ],
    env: { DENO_COVERAGE_DIR: "coverage" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  await Deno.remove(file);
  const dec = new TextDecoder();
  return { code: out.code, text: dec.decode(out.stdout) + dec.decode(out.stderr) };
}

Deno.test("coverage gate: one folder under the threshold fails the run and is named", async () => {
  const failing = await gate(LCOV);
  assert.equal(failing.code, 1);
  assert.match(failing.text, /FAIL src\/api\s+85\.0%/);
  const passing = await gate(record("/repo/src/api/a.ts", 100, 95));
  assert.equal(passing.code, 0, passing.text);
});
