/**
 * Deploys the edge role to Deno Deploy with `deno deploy` (see docs/deploy.md).
 *   deno task deploy [--env-file FILE] [--dry-run] [--promote] [--create]
 * Exit codes: 0 done, 1 a deploy step failed, 2 bad input.
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import type { Env } from "../src/config.ts";
import { DeployError, type ExecDeps, execute, systemDeps } from "../src/deploy/execute.ts";
import { buildPlan, PlanError, renderPlan } from "../src/deploy/plan.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
export const DEFAULT_ENV_FILE = "infra/deploy/deploy.env.json";

const USAGE = `usage: deno task deploy [--env-file FILE] [--dry-run] [--promote] [--create]
  --env-file FILE  the env mapping (default ${DEFAULT_ENV_FILE}, from infra/deploy/deploy.env.example.json)
  --dry-run        print the plan; run nothing, no network
  --promote        once the preview answers /healthz, deploy the same tree to production
  --create         create the Deno Deploy app first (first deployment only)`;

export interface Io {
  out(text: string): void;
  err(text: string): void;
}

export async function main(
  args: string[],
  env: Env,
  opts: { root?: string; deps?: ExecDeps; io?: Io } = {},
): Promise<number> {
  const io = opts.io ?? { out: console.log, err: console.error };
  const root = opts.root ?? ROOT;
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        "env-file": { type: "string" },
        "dry-run": { type: "boolean", default: false },
        promote: { type: "boolean", default: false },
        create: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
    }));
  } catch (err) {
    io.err(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    io.out(USAGE);
    return 0;
  }
  const file = values["env-file"] ?? join(root, DEFAULT_ENV_FILE);
  let mapping: unknown;
  try {
    mapping = JSON.parse(Deno.readTextFileSync(file));
  } catch (err) {
    io.err(
      `deploy: cannot read the env mapping ${file}: ${(err as Error).message}\n` +
        `Copy infra/deploy/deploy.env.example.json to ${DEFAULT_ENV_FILE} and fill it in.`,
    );
    return 2;
  }
  let plan;
  try {
    plan = buildPlan({
      mapping,
      env,
      readFile: (path) => Deno.readTextFileSync(join(root, path)),
      promote: values.promote,
      create: values.create,
    });
  } catch (err) {
    if (!(err instanceof PlanError)) throw err;
    io.err(`deploy: ${file} is not deployable:\n${err.problems.map((p) => `  - ${p}`).join("\n")}`);
    return 2;
  }
  const dryRun = values["dry-run"];
  io.out(renderPlan(plan, { dryRun, tokenSet: Boolean(env.DENO_DEPLOY_TOKEN) }));
  if (dryRun) return 0;
  io.out("");
  try {
    const urls = await execute(plan, opts.deps ?? systemDeps(root));
    io.out(
      `deployed: preview ${urls.preview}${
        urls.production ? `, production ${urls.production}` : ""
      }`,
    );
    return 0;
  } catch (err) {
    if (!(err instanceof DeployError)) throw err;
    io.err(`deploy failed: ${err.message}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args, Deno.env.toObject()));
