/**
 * Writes the quarterly access review (spec `convergio-v7-ops.md` §7) as
 * Markdown and CSV, from the ledger database the gateway's config names.
 *   deno task report:quarterly [--quarter 2026-Q3] [--out ./reports]
 * The quarter defaults to the last one that has fully ended.
 */
import { parseArgs } from "node:util";
import {
  buildAccessReview,
  parseQuarter,
  previousQuarter,
  quarterLabel,
} from "../src/compliance/access_review.ts";
import { ConfigError, loadConfig } from "../src/config.ts";
import { openDatabase } from "../src/db/client.ts";
import { migrate } from "../src/db/migrate.ts";

/** Returns the paths written. */
export async function run(
  args: string[],
  env: Record<string, string | undefined>,
  now = new Date(),
): Promise<string[]> {
  const { values } = parseArgs({
    args,
    options: {
      quarter: { type: "string" },
      out: { type: "string", default: "./reports" },
    },
    strict: true,
  });
  const quarter = values.quarter ? parseQuarter(values.quarter) : previousQuarter(now);
  const config = loadConfig(env, Deno.readTextFileSync);
  const db = await openDatabase(config.database_url?.reveal(), config.data_dir);
  try {
    await migrate(db.sql);
    const review = await buildAccessReview(db.sql, {
      quarter,
      now,
      defaultBusinessRetentionMonths: config.metering.retention_business_months,
    });
    await Deno.mkdir(values.out, { recursive: true });
    const base = `${values.out}/access-review-${quarterLabel(quarter)}`;
    await Deno.writeTextFile(`${base}.md`, review.markdown);
    await Deno.writeTextFile(`${base}.csv`, review.csv);
    return [`${base}.md`, `${base}.csv`];
  } finally {
    await db.close();
  }
}

if (import.meta.main) {
  try {
    for (const path of await run(Deno.args, Deno.env.toObject())) console.log(path);
  } catch (err) {
    console.error(
      err instanceof ConfigError ? err.message : `report:quarterly: ${(err as Error).message}`,
    );
    Deno.exit(2);
  }
}
