import assert from "node:assert/strict";
import { main } from "../../scripts/deploy.ts";
import type { ExecDeps } from "../../src/deploy/execute.ts";
import { minimalMapping, SECRETS } from "./_fixtures.ts";

const ROOT = decodeURIComponent(new URL("../../", import.meta.url).pathname);

async function mappingFile(mapping: unknown = minimalMapping()): Promise<string> {
  const file = await Deno.makeTempFile({ suffix: ".json" });
  await Deno.writeTextFile(file, JSON.stringify(mapping));
  return file;
}

/**
 * `deno task deploy` as a subprocess with read and env permissions only: a
 * dry run that tried to spawn `deno deploy` or reach the network would die
 * on a permission error.
 */
async function deployCli(args: string[], env: Record<string, string> = SECRETS) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-env", "scripts/deploy.ts", ...args],
    cwd: ROOT,
    env: { DENO_COVERAGE_DIR: "coverage", DENO_DEPLOY_TOKEN: "", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

function assertNoSecret(...texts: string[]) {
  for (const secret of Object.values(SECRETS)) {
    for (const text of texts) {
      assert.ok(!text.includes(secret), `a secret value was printed:\n${text}`);
    }
  }
}

Deno.test("deploy --dry-run prints the whole plan, runs nothing and prints no secret", async () => {
  const file = await mappingFile();
  try {
    const res = await deployCli(["--dry-run", "--env-file", file]);
    assert.equal(res.code, 0, res.stderr);
    assertNoSecret(res.stdout, res.stderr);
    assert.equal(res.stderr, "");
    const out = res.stdout;
    assert.match(out, /Convergio edge → Deno Deploy \(dry run: nothing runs, no network\)/);
    assert.match(out, /org: {8}convergio\n/);
    assert.match(out, /app: {8}convergio-edge\n/);
    assert.match(out, /entrypoint: src\/main\.ts\n/);
    assert.match(out, /role: {7}ROLE=edge\n/);
    assert.match(out, /DENO_DEPLOY_TOKEN is not set/);
    for (const name of ["ROLE", "BUDGET_STORE", "AGGREGATOR_URL", "REDIS_REST_URL"]) {
      assert.match(out, new RegExp(`\\n  ${name} +\\S+ +\\((pinned|literal)\\)\\n`));
    }
    for (const name of ["METERING_SECRET", "JWT_SECRET", "REDIS_REST_TOKEN"]) {
      assert.match(
        out,
        new RegExp(`\\n  ${name} +\\[redacted\\] +\\(secret, env:CVG_${name}\\)\\n`),
      );
    }
    assert.match(
      out,
      /1\. deno deploy env load --org convergio --app convergio-edge --non-interactive --replace <env-file> --non-secrets ROLE BUDGET_STORE AGGREGATOR_URL REDIS_REST_URL\n/,
    );
    assert.match(
      out,
      /2\. deno deploy env list --org convergio --app convergio-edge --json --non-interactive\n/,
    );
    assert.match(
      out,
      /3\. deno deploy --org convergio --app convergio-edge --non-interactive --json \.\n/,
    );
    assert.match(out, /4\. GET <preview URL>\/healthz/);
    assert.ok(!out.includes("--prod"), "no production step without --promote");
    assert.match(out, /production: not touched \(pass --promote\)/);

    const promoted = await deployCli(["--dry-run", "--promote", "--env-file", file]);
    assert.equal(promoted.code, 0, promoted.stderr);
    assertNoSecret(promoted.stdout, promoted.stderr);
    assert.match(
      promoted.stdout,
      /5\. deno deploy --org convergio --app convergio-edge --non-interactive --json --prod \.\n/,
    );
    assert.match(promoted.stdout, /6\. GET <production URL>\/healthz/);
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("deploy refuses bad input with exit 2 and clear messages, printing no secret", async () => {
  const file = await mappingFile();
  try {
    const missing = await deployCli(["--dry-run", "--env-file", file], {
      CVG_JWT_SECRET: SECRETS.CVG_JWT_SECRET,
      CVG_REDIS_REST_TOKEN: SECRETS.CVG_REDIS_REST_TOKEN,
    });
    assert.equal(missing.code, 2);
    assert.equal(missing.stdout, "");
    assert.equal(
      missing.stderr,
      `deploy: ${file} is not deployable:\n` +
        "  - METERING_SECRET: env:CVG_METERING_SECRET is not set in the deploying environment\n",
    );
    assertNoSecret(missing.stdout, missing.stderr);

    const flag = await deployCli(["--dry-run", "--prodd"]);
    assert.equal(flag.code, 2);
    assert.match(flag.stderr, /Unknown option '--prodd'/);
    assert.match(flag.stderr, /usage: deno task deploy/);

    const absent = await deployCli(["--dry-run", "--env-file", `${file}.absent`]);
    assert.equal(absent.code, 2);
    assert.match(absent.stderr, /cannot read the env mapping .*\.absent/);
    assert.match(absent.stderr, /Copy infra\/deploy\/deploy\.env\.example\.json/);
  } finally {
    await Deno.remove(file);
  }
});

/** Runs main() in-process with fake effects, collecting what it prints. */
async function runMain(args: string[], deps?: Partial<ExecDeps>, root?: string) {
  const out: string[] = [];
  const err: string[] = [];
  const fake: ExecDeps = {
    run: (argv) =>
      Promise.resolve({
        code: 0,
        stdout: argv[1] === "env"
          ? argv[2] === "list"
            ? JSON.stringify(
              ["ROLE", "BUDGET_STORE", "AGGREGATOR_URL", "REDIS_REST_URL"].map((key) => ({
                key,
                isSecret: false,
              })).concat(
                ["METERING_SECRET", "JWT_SECRET", "REDIS_REST_TOKEN", "BYOK_MASTER_KEYS"].map((
                  key,
                ) => ({ key, isSecret: true })),
              ),
            )
            : ""
          : JSON.stringify({
            timelines: [{
              domains: [argv.includes("--prod") ? "edge.deno.net" : "edge-1.deno.net"],
            }],
          }),
        stderr: "",
      }),
    writePrivateFile: () => Promise.resolve("/tmp/x.env"),
    remove: () => Promise.resolve(),
    fetch: () => Promise.resolve(Response.json({ status: "ok", role: "edge" })),
    sleep: () => Promise.resolve(),
    log: (line) => out.push(line),
    ...deps,
  };
  const code = await main(args, SECRETS, {
    root,
    deps: fake,
    io: { out: (t) => out.push(t), err: (t) => err.push(t) },
  });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

Deno.test("deploy main: runs the plan, 1 when a step fails, 0 for --help", async () => {
  const file = await mappingFile();
  try {
    const done = await runMain(["--env-file", file, "--promote"]);
    assert.equal(done.code, 0, done.err);
    assert.match(
      done.out,
      /deployed: preview https:\/\/edge-1\.deno\.net, production https:\/\/edge\.deno\.net$/,
    );
    assertNoSecret(done.out, done.err);
    const preview = await runMain(["--env-file", file]);
    assert.match(preview.out, /deployed: preview https:\/\/edge-1\.deno\.net$/);

    const failed = await runMain(["--env-file", file], {
      fetch: () => Promise.resolve(new Response("down", { status: 503 })),
    });
    assert.equal(failed.code, 1);
    assert.match(failed.err, /^deploy failed: https:\/\/edge-1\.deno\.net\/healthz did not answer/);

    const help = await runMain(["--help"]);
    assert.equal(help.code, 0);
    assert.match(help.out, /--promote +once the preview answers \/healthz/);
    // Without --env-file, the default mapping under the repository root.
    const root = await Deno.makeTempDir();
    const absent = await runMain([], undefined, root);
    await Deno.remove(root);
    assert.equal(absent.code, 2);
    assert.match(
      absent.err,
      new RegExp(`cannot read the env mapping ${root}/infra/deploy/deploy\\.env\\.json`),
    );
  } finally {
    await Deno.remove(file);
  }
});
