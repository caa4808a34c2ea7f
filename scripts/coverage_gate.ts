/**
 * Line coverage per folder of src/ (quality gate, spec 4.1): the overall
 * figure can hide a folder that is barely tested. Reads an lcov file
 * (`deno coverage --lcov`) and fails when any folder is under the threshold.
 */

export interface FolderCoverage {
  folder: string;
  found: number;
  hit: number;
  percent: number;
}

/** `src/api/x.ts` → `src/api`; files directly under src/ form the folder `src`. */
function folderOf(path: string): string | undefined {
  const m = /(?:^|\/)src\/(?:([^/]+)\/)?[^/]+$/.exec(path);
  if (!m) return undefined;
  return m[1] ? `src/${m[1]}` : "src";
}

export function coverageByFolder(lcov: string): FolderCoverage[] {
  const totals = new Map<string, { found: number; hit: number }>();
  let folder: string | undefined;
  for (const line of lcov.split("\n")) {
    if (line.startsWith("SF:")) folder = folderOf(line.slice(3).replace(/^file:\/\//, ""));
    if (!folder) continue;
    const t = totals.get(folder) ?? { found: 0, hit: 0 };
    if (line.startsWith("LF:")) t.found += Number(line.slice(3));
    if (line.startsWith("LH:")) t.hit += Number(line.slice(3));
    totals.set(folder, t);
  }
  return [...totals].map(([f, t]) => ({
    folder: f,
    ...t,
    percent: t.found ? (t.hit / t.found) * 100 : 100,
  })).sort((a, b) => a.folder.localeCompare(b.folder));
}

if (import.meta.main) {
  const [file, threshold = "90"] = Deno.args;
  if (!file) {
    console.error("usage: coverage_gate.ts <lcov file> [threshold percent]");
    Deno.exit(2);
  }
  const folders = coverageByFolder(await Deno.readTextFile(file));
  const min = Number(threshold);
  const low = folders.filter((f) => f.percent < min);
  for (const f of folders) {
    console.log(
      `${f.percent < min ? "FAIL" : "ok  "} ${f.folder.padEnd(16)} ${
        f.percent.toFixed(1)
      }% (${f.hit}/${f.found} lines)`,
    );
  }
  if (!folders.length) {
    console.error("coverage gate: no src/ files in the lcov report");
    Deno.exit(1);
  }
  if (low.length) {
    console.error(`coverage gate: ${low.length} folder(s) under ${min}% line coverage`);
    Deno.exit(1);
  }
  console.log(`coverage gate: every src/ folder at or over ${min}% line coverage`);
}
