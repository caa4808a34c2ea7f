/**
 * Secret scan (quality gate): secretlint's recommended rules (provider keys,
 * connection strings, private keys…) plus the gateway's own, over every file
 * git would commit, or with `--staged` over the staged content only (the
 * pre-commit hook). Exits 1 and names file, line and rule on a finding.
 */
import { lintSource } from "@secretlint/core";
import { creator as recommended } from "@secretlint/secretlint-rule-preset-recommend";
import { creator as gateway } from "./secret_rules.ts";

export interface Finding {
  file: string;
  line: number;
  rule: string;
  message: string;
}

const config = {
  rules: [
    { id: "@secretlint/secretlint-rule-preset-recommend", rule: recommended },
    { id: gateway.meta.id, rule: gateway },
  ],
};

export async function scanText(file: string, content: string): Promise<Finding[]> {
  const result = await lintSource({
    source: { filePath: file, content, contentType: "text" },
    // The custom rule's context type is narrower than secretlint's; the shape is the same.
    options: { config: config as never, maskSecrets: true },
  });
  return result.messages.map((m) => ({
    file,
    line: m.loc.start.line,
    rule: m.ruleId,
    message: m.message,
  }));
}

async function git(...args: string[]): Promise<Uint8Array> {
  const out = await new Deno.Command("git", { args }).output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  return out.stdout;
}

const lines = (bytes: Uint8Array) => new TextDecoder().decode(bytes).split("\0").filter(Boolean);

/** What would be committed now: the staged blobs, not the work tree. */
async function stagedContents(): Promise<Array<[string, () => Promise<string>]>> {
  const files = lines(await git("diff", "--cached", "--name-only", "--diff-filter=ACMR", "-z"));
  return files.map((f) => [f, async () => new TextDecoder().decode(await git("show", `:${f}`))]);
}

async function trackedContents(): Promise<Array<[string, () => Promise<string>]>> {
  const files = lines(await git("ls-files", "--cached", "--others", "--exclude-standard", "-z"));
  return files.map((f) => [f, () => Deno.readTextFile(f)]);
}

if (import.meta.main) {
  const findings: Finding[] = [];
  const files = Deno.args.includes("--staged") ? await stagedContents() : await trackedContents();
  for (const [file, read] of files) {
    let content: string;
    try {
      content = await read();
    } catch {
      continue; // deleted in the work tree, or not text
    }
    findings.push(...await scanText(file, content));
  }
  for (const f of findings) console.error(`${f.file}:${f.line} ${f.rule}: ${f.message}`);
  console.log(`secret scan: ${files.length} files, ${findings.length} findings`);
  if (findings.length) Deno.exit(1);
}
