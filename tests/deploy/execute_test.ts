import assert from "node:assert/strict";
import {
  DeployError,
  deploymentUrl,
  type ExecDeps,
  execute,
  HEALTHZ_ATTEMPTS,
  type RunResult,
  systemDeps,
  verifyEnv,
} from "../../src/deploy/execute.ts";
import { buildPlan, type Plan } from "../../src/deploy/plan.ts";
import { minimalMapping, SECRETS } from "./_fixtures.ts";

const ROOT = new URL("../../", import.meta.url);
const readRepoFile = (path: string) => Deno.readTextFileSync(new URL(path, ROOT));

function plan(promote = false): Plan {
  return buildPlan({ mapping: minimalMapping(), env: SECRETS, readFile: readRepoFile, promote });
}

const PREVIEW = "https://convergio-edge-abc123.convergio.deno.net";
const PRODUCTION = "https://convergio-edge.convergio.deno.net";

/** What Deno Deploy holds after a good `env load` of the plan, plus a stray variable. */
function listed(p: Plan, overrides: Record<string, boolean> = {}) {
  return JSON.stringify([
    ...p.vars.map((v) => ({ key: v.name, isSecret: overrides[v.name] ?? v.secret })),
    { key: "LEGACY_FLAG", isSecret: false },
  ]);
}

/** Fake effects: a scripted `deno deploy`, a recorded env file and a healthy gateway. */
function fakeDeps(p: Plan, script: Partial<Record<string, (argv: string[]) => RunResult>> = {}) {
  const calls: string[][] = [];
  const logs: string[] = [];
  const files = new Map<string, string>();
  const fetched: string[] = [];
  let sleeps = 0;
  const ok = (stdout = "", stderr = ""): RunResult => ({ code: 0, stdout, stderr });
  const defaults: Record<string, (argv: string[]) => RunResult> = {
    load: () => ok("", "✔ .env file loaded"),
    list: () => ok(listed(p)),
    deploy: (argv) =>
      ok(
        JSON.stringify({
          revisionId: "rev_1",
          url: "https://console.deno.com/convergio/convergio-edge/builds/rev_1",
          timelines: [{
            partition: "x",
            domains: [argv.includes("--prod") ? PRODUCTION : PREVIEW],
          }],
        }),
        "Uploading… done",
      ),
  };
  const deps: ExecDeps & { healthy: (url: string) => Response } = {
    run(argv) {
      calls.push(argv);
      const kind = argv[1] === "env" ? argv[2] : "deploy";
      return Promise.resolve((script[kind] ?? defaults[kind])(argv));
    },
    writePrivateFile(text) {
      const path = `/tmp/fake-${files.size}.env`;
      files.set(path, text);
      return Promise.resolve(path);
    },
    remove(path) {
      files.delete(path);
      return Promise.resolve();
    },
    healthy: () => Response.json({ status: "ok", role: "edge" }),
    fetch(url) {
      fetched.push(url);
      return Promise.resolve(deps.healthy(url));
    },
    sleep() {
      sleeps++;
      return Promise.resolve();
    },
    log: (line) => logs.push(line),
  };
  return { deps, calls, logs, files, fetched, sleeps: () => sleeps };
}

Deno.test("execute: env load from a private file, verify, preview, health; the file is removed", async () => {
  const p = plan();
  const fake = fakeDeps(p);
  let written = "";
  const write = fake.deps.writePrivateFile;
  fake.deps.writePrivateFile = (text) => {
    written = text;
    return write(text);
  };
  const urls = await execute(p, fake.deps);
  assert.deepEqual(urls, { preview: PREVIEW });
  assert.deepEqual(fake.calls.map((a) => a.slice(0, 3).join(" ")), [
    "deploy env load",
    "deploy env list",
    "deploy --org convergio",
  ]);
  const load = fake.calls[0];
  assert.equal(load[load.indexOf("--replace") + 1], "/tmp/fake-0.env");
  assert.ok(written.includes(`JWT_SECRET='${SECRETS.CVG_JWT_SECRET}'`));
  assert.equal(fake.files.size, 0, "the env file is removed");
  assert.ok(!fake.calls.some((a) => a.includes("--prod")));
  assert.deepEqual(fake.fetched, [`${PREVIEW}/healthz`]);
  const log = fake.logs.join("\n");
  assert.match(log, /\[1\/4\] deno deploy env load .* \/tmp\/fake-0\.env --non-secrets/);
  assert.match(log, /✔ \.env file loaded/);
  assert.match(log, /note: LEGACY_FLAG is set on Deno Deploy but not in the mapping/);
  assert.match(log, /preview: https:\/\/convergio-edge-abc123/);
  for (const secret of Object.values(SECRETS)) assert.ok(!log.includes(secret));
});

Deno.test("execute: --promote deploys to production after the preview is healthy", async () => {
  const p = plan(true);
  const fake = fakeDeps(p);
  assert.deepEqual(await execute(p, fake.deps), { preview: PREVIEW, production: PRODUCTION });
  assert.ok(fake.calls[3].includes("--prod"));
  assert.deepEqual(fake.fetched, [`${PREVIEW}/healthz`, `${PRODUCTION}/healthz`]);

  // An unhealthy preview stops before production.
  const sick = fakeDeps(p);
  sick.deps.healthy = () => Response.json({ status: "ok", role: "all" });
  await assert.rejects(execute(p, sick.deps), (err) => {
    assert.ok(err instanceof DeployError);
    assert.match(err.message, /healthz did not answer 200 \{"status":"ok","role":"edge"\}/);
    assert.match(err.message, /last: 200 \{"status":"ok","role":"all"\}/);
    return true;
  });
  assert.equal(sick.fetched.length, HEALTHZ_ATTEMPTS);
  assert.equal(sick.sleeps(), HEALTHZ_ATTEMPTS - 1);
  assert.ok(!sick.calls.some((a) => a.includes("--prod")));

  // A preview that comes up after a while passes.
  const slow = fakeDeps(p);
  let attempts = 0;
  slow.deps.fetch = () => {
    if (++attempts < 3) return Promise.reject(new Error("connection refused"));
    return Promise.resolve(Response.json({ status: "ok", role: "edge" }));
  };
  await execute(p, slow.deps);
  assert.equal(slow.sleeps(), 2);
});

Deno.test("execute: a failing command stops the run, its output redacted; the env file still goes", async () => {
  const p = plan(true);
  const fake = fakeDeps(p, {
    load: () => ({ code: 3, stdout: "", stderr: `invalid token near ${SECRETS.CVG_JWT_SECRET}` }),
  });
  await assert.rejects(execute(p, fake.deps), (err) => {
    assert.ok(err instanceof DeployError);
    assert.match(err.message, /deno deploy env load .* exited 3\ninvalid token near \[redacted\]/);
    assert.ok(!err.message.includes(SECRETS.CVG_JWT_SECRET));
    return true;
  });
  assert.equal(fake.calls.length, 1);
  assert.equal(fake.files.size, 0);

  const noUrl = fakeDeps(p, { deploy: () => ({ code: 0, stdout: "done", stderr: "" }) });
  await assert.rejects(execute(p, noUrl.deps), /no preview URL in the output of deno deploy/);
});

Deno.test("execute: a secret stored as plain text, or a missing variable, stops before deploying", async () => {
  const p = plan(true);
  const plain = fakeDeps(p, {
    list: () => ({ code: 0, stdout: listed(p, { REDIS_REST_TOKEN: false }), stderr: "" }),
  });
  await assert.rejects(
    execute(p, plain.deps),
    /REDIS_REST_TOKEN was stored as plain text: rotate it, then set it as a secret in the console/,
  );
  assert.ok(!plain.calls.some((a) => a[1] !== "env"), "nothing deployed");

  const missing = JSON.stringify(
    p.vars.filter((v) => v.name !== "BYOK_MASTER_KEYS" && v.name !== "ROLE").map((v) => ({
      key: v.name,
      isSecret: v.secret,
    })),
  );
  await assert.rejects(
    execute(p, fakeDeps(p, { list: () => ({ code: 0, stdout: missing, stderr: "" }) }).deps),
    (err) => {
      assert.match(String(err), /ROLE is missing on Deno Deploy\n/);
      assert.match(
        String(err),
        /BYOK_MASTER_KEYS is missing on Deno Deploy: set it as a secret in the console/,
      );
      return true;
    },
  );
  assert.throws(
    () => verifyEnv("{}", p),
    /cannot read `deno deploy env list --json`: not an array/,
  );
  assert.throws(() => verifyEnv("oops", p), /cannot read `deno deploy env list --json`/);
});

Deno.test("deploymentUrl: the publish result's domains, else an app URL in the output", () => {
  const result = { timelines: [{ partition: "preview", domains: ["edge-x.org.deno.net/"] }] };
  assert.equal(deploymentUrl(JSON.stringify(result)), "https://edge-x.org.deno.net");
  assert.equal(
    deploymentUrl(
      `Building…\n${JSON.stringify({ timelines: [{ domains: ["https://a.deno.dev"] }] })}\n`,
    ),
    "https://a.deno.dev",
  );
  assert.equal(
    deploymentUrl(
      "see https://console.deno.com/o/a/builds/1\nPreview: https://a-1.o.deno.net ready",
    ),
    "https://a-1.o.deno.net",
  );
  assert.equal(deploymentUrl(JSON.stringify({ timelines: [] })), undefined);
  assert.equal(deploymentUrl(""), undefined);
});

Deno.test("systemDeps: runs this Deno, writes 0600 files, fetches and sleeps", async () => {
  const deps = systemDeps(decodeURIComponent(ROOT.pathname));
  const version = await deps.run(["--version"]);
  assert.equal(version.code, 0);
  assert.match(version.stdout, new RegExp(`^deno ${Deno.version.deno.replaceAll(".", "\\.")}`));
  const failed = await deps.run(["no-such-subcommand-xyz"]);
  assert.notEqual(failed.code, 0);

  const path = await deps.writePrivateFile("A='1'\n");
  try {
    assert.equal(await Deno.readTextFile(path), "A='1'\n");
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
  } finally {
    await deps.remove(path);
  }
  await assert.rejects(Deno.stat(path), Deno.errors.NotFound);

  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => Response.json({ status: "ok", role: "edge" }),
  );
  try {
    const res = await deps.fetch(`http://127.0.0.1:${server.addr.port}/healthz`);
    assert.deepEqual(await res.json(), { status: "ok", role: "edge" });
  } finally {
    await server.shutdown();
  }
  const started = performance.now();
  await deps.sleep(20);
  assert.ok(performance.now() - started >= 15);
});
