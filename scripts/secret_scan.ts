/**
 * Secret scan (quality gate): runs secretlint's recommended rules over every
 * file git would commit. Exits 1 and names file, line and rule on a finding.
 */
import { lintSource } from "@secretlint/core";
import { creator as recommended } from "@secretlint/secretlint-rule-preset-recommend";

export interface Finding {
  file: string;
  line: number;
  rule: string;
  message: string;
}

const config = {
  rules: [{ id: "@secretlint/secretlint-rule-preset-recommend", rule: recommended }],
};

export async function scanText(file: string, content: string): Promise<Finding[]> {
  const result = await lintSource({
    source: { filePath: file, content, contentType: "text" },
    options: { config, maskSecrets: true },
  });
  return result.messages.map((m) => ({
    file,
    line: m.loc.start.line,
    rule: m.ruleId,
    message: m.message,
  }));
}

async function trackedFiles(): Promise<string[]> {
  const out = await new Deno.Command("git", {
    args: ["ls-files", "--cached", "--others", "--exclude-standard", "-z"],
  }).output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout).split("\0").filter(Boolean);
}

if (import.meta.main) {
  const findings: Finding[] = [];
  const files = await trackedFiles();
  for (const file of files) {
    let content: string;
    try {
      content = await Deno.readTextFile(file);
    } catch {
      continue; // deleted in the work tree, or not text
    }
    findings.push(...await scanText(file, content));
  }
  for (const f of findings) console.error(`${f.file}:${f.line} ${f.rule}: ${f.message}`);
  console.log(`secret scan: ${files.length} files, ${findings.length} findings`);
  if (findings.length) Deno.exit(1);
}
