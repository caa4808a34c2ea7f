import assert from "node:assert/strict";

const ROOT = new URL("../../", import.meta.url).pathname;
const COPIED = [
  "deno.json",
  "deno.lock",
  "scripts/secret_scan.ts",
  "scripts/secret_rules.ts",
  "scripts/hooks/pre-commit",
];

async function run(cwd: string, cmd: string, ...args: string[]) {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  return { ok: out.success, text: dec.decode(out.stdout) + dec.decode(out.stderr) };
}

/** A scratch repository with the hook installed the way `deno task hooks` does. */
async function withRepo(
  fn: (
    commit: (files: Record<string, string>) => Promise<{ ok: boolean; text: string }>,
  ) => Promise<void>,
) {
  const dir = await Deno.makeTempDir({ prefix: "cvg-hook-" });
  try {
    for (const f of COPIED) {
      await Deno.mkdir(`${dir}/${f.split("/").slice(0, -1).join("/") || "."}`, { recursive: true });
      await Deno.copyFile(`${ROOT}${f}`, `${dir}/${f}`);
    }
    await run(dir, "git", "init", "-q");
    await run(dir, "git", "config", "user.email", "hook@test.invalid");
    await run(dir, "git", "config", "user.name", "hook test");
    const installed = await run(dir, "deno", "task", "hooks");
    assert.ok(installed.ok, installed.text);
    await fn(async (files) => {
      for (const [name, content] of Object.entries(files)) {
        await Deno.writeTextFile(`${dir}/${name}`, content);
        await run(dir, "git", "add", name);
      }
      const result = await run(dir, "git", "commit", "-q", "-m", "change");
      if (!result.ok) {
        // A refused change leaves the index: the next attempt starts clean.
        for (const name of Object.keys(files)) {
          await run(dir, "git", "rm", "-q", "--cached", name);
          await Deno.remove(`${dir}/${name}`);
        }
      }
      return result;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("pre-commit hook: a clean change commits; a planted key, bad format or a type error does not", async () => {
  await withRepo(async (commit) => {
    const clean = await commit({ "ok.ts": "export const answer: number = 42;\n" });
    assert.ok(clean.ok, clean.text);

    const key = `cvg_${"0123456789abcdef".repeat(3)}`;
    const planted = await commit({ "leak.env": `GATEWAY_KEY=${key}\n` });
    assert.equal(planted.ok, false);
    assert.match(planted.text, /leak\.env:1 convergio\/secretlint-rule-gateway/);
    assert.ok(!planted.text.includes(key), "the finding is masked");

    const unformatted = await commit({ "ugly.ts": "export const x   =  1\n" });
    assert.equal(unformatted.ok, false);
    assert.match(unformatted.text, /Found 1 not formatted file/);

    const wrongType = await commit({ "typed.ts": 'export const n: number = "one";\n' });
    assert.equal(wrongType.ok, false);
    assert.match(wrongType.text, /TS2322/);
  });
});
