import assert from "node:assert/strict";
import {
  type CommandResult,
  type Files,
  type NginxOptions,
  NginxSwitch,
  realFiles,
  reloadArgv,
  runCommand,
  validateArgv,
} from "../../src/canary/nginx.ts";
import { DEFAULT_UPSTREAM, parseWeights } from "../../src/canary/upstream.ts";
import { nginxBinary } from "./_support.ts";

const OPTS: NginxOptions = {
  upstream: { ...DEFAULT_UPSTREAM, stable: "127.0.0.1:8080", canary: "127.0.0.1:8081" },
  file: "/etc/nginx/nginx-upstream.conf",
  conf: "/etc/nginx/nginx.conf",
  bin: "nginx",
};

function memoryFiles(initial: Record<string, string> = {}) {
  const map = new Map(Object.entries(initial));
  const log: string[] = [];
  const files: Files = {
    read: (p) => Promise.resolve(map.get(p)),
    write: (p, t) => {
      log.push(`write ${p}`);
      map.set(p, t);
      return Promise.resolve();
    },
    remove: (p) => {
      log.push(`remove ${p}`);
      map.delete(p);
      return Promise.resolve();
    },
    writable: (p) =>
      p.startsWith("/readonly/")
        ? Promise.reject(new Error("permission denied"))
        : Promise.resolve(),
  };
  return { map, log, files };
}

/** Records argv; answers by the first matching rule. */
function commands(rules: Array<[RegExp, CommandResult | Error]> = []) {
  const ran: string[] = [];
  const run = (argv: string[]) => {
    const line = argv.join(" ");
    ran.push(line);
    const hit = rules.find(([re]) => re.test(line))?.[1];
    if (hit instanceof Error) return Promise.reject(hit);
    return Promise.resolve(hit ?? { code: 0, output: "" });
  };
  return { ran, run };
}

Deno.test("each step: write the file, nginx -t, reload, in that order", async () => {
  const { map, files } = memoryFiles({ [OPTS.file]: "original" });
  const { ran, run } = commands();
  const sw = new NginxSwitch(OPTS, run, files);
  assert.equal(
    await sw.apply(25),
    "wrote /etc/nginx/nginx-upstream.conf (stable weight 3, canary weight 1), nginx -t ok, reloaded",
  );
  assert.deepEqual(ran, [
    "nginx -t -c /etc/nginx/nginx.conf",
    "nginx -s reload -c /etc/nginx/nginx.conf",
  ]);
  assert.deepEqual(parseWeights(map.get(OPTS.file)!), { "127.0.0.1:8080": 3, "127.0.0.1:8081": 1 });
  await sw.rollback("RB-1: 5xx ratio 50%\nsecond line");
  const back = map.get(OPTS.file)!;
  assert.deepEqual(parseWeights(back), { "127.0.0.1:8080": 1 });
  assert.match(back, /rolled back \(RB-1: 5xx ratio 50% second line\)/);
  await sw.promote();
  assert.deepEqual(parseWeights(map.get(OPTS.file)!), { "127.0.0.1:8081": 1 });
  assert.match(map.get(OPTS.file)!, /: promoted\./);
});

Deno.test("without --nginx-conf: no nginx -t; a custom reload command replaces nginx -s reload", async () => {
  const { files } = memoryFiles();
  const plain = commands();
  const sw = new NginxSwitch({ ...OPTS, conf: undefined }, plain.run, files);
  assert.match(await sw.apply(5), /canary weight 1\), reloaded$/);
  assert.deepEqual(plain.ran, ["nginx -s reload"]);
  const custom = commands();
  const opts = { ...OPTS, reloadCmd: ["systemctl", "reload", "nginx"] };
  await new NginxSwitch(opts, custom.run, files).apply(5);
  assert.deepEqual(custom.ran, ["nginx -t -c /etc/nginx/nginx.conf", "systemctl reload nginx"]);
  assert.deepEqual(reloadArgv(opts), ["systemctl", "reload", "nginx"]);
  assert.equal(validateArgv({ ...OPTS, conf: undefined }), undefined);
  assert.match(
    new NginxSwitch(opts, custom.run, files).describe().join("\n"),
    /`systemctl reload nginx`/,
  );
  assert.match(
    new NginxSwitch({ ...OPTS, conf: undefined }, custom.run, files).describe().join("\n"),
    /no nginx -t \(no --nginx-conf\)/,
  );
});

Deno.test("a file nginx -t refuses is put back, and nginx is not reloaded", async () => {
  const { map, files } = memoryFiles({ [OPTS.file]: "original" });
  const { ran, run } = commands([[/ -t /, {
    code: 1,
    output: "nginx: [emerg] unknown directive\n",
  }]]);
  const sw = new NginxSwitch(OPTS, run, files);
  await assert.rejects(
    sw.apply(50),
    /^Error: nginx -t refused the new upstream file \(`nginx -t -c \/etc\/nginx\/nginx.conf` exit 1\): nginx: \[emerg\] unknown directive$/,
  );
  assert.equal(map.get(OPTS.file), "original");
  assert.deepEqual(ran, ["nginx -t -c /etc/nginx/nginx.conf"]);
});

Deno.test("a failed reload puts the file back too; a file that did not exist is removed", async () => {
  const { map, files, log } = memoryFiles();
  const { run } = commands([[/reload/, { code: 1, output: "nginx: [error] invalid PID number" }]]);
  const sw = new NginxSwitch(OPTS, run, files);
  await assert.rejects(sw.apply(5), /nginx reload failed .*invalid PID number/);
  assert.equal(map.has(OPTS.file), false);
  assert.deepEqual(log, [`write ${OPTS.file}`, `remove ${OPTS.file}`]);
  const missing = commands([[/reload/, new Deno.errors.NotFound("No such file")]]);
  await assert.rejects(
    new NginxSwitch(OPTS, missing.run, files).apply(5),
    /nginx reload failed: cannot run nginx: No such file/,
  );
});

Deno.test("preflight: the folder must take a file and nginx -t must accept the current config", async () => {
  const { files } = memoryFiles();
  const ok = commands();
  await new NginxSwitch(OPTS, ok.run, files).preflight();
  assert.deepEqual(ok.ran, ["nginx -t -c /etc/nginx/nginx.conf"]);
  await assert.rejects(
    new NginxSwitch({ ...OPTS, file: "/readonly/up.conf" }, ok.run, files).preflight(),
    /permission denied/,
  );
  const bad = commands([[/ -t /, { code: 1, output: "broken" }]]);
  await assert.rejects(
    new NginxSwitch(OPTS, bad.run, files).preflight(),
    /nginx -t refuses the current config/,
  );
});

Deno.test("real files: atomic replace, missing reads as undefined, writable probe", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/up.conf`;
    assert.equal(await realFiles.read(file), undefined);
    await realFiles.writable(file);
    await realFiles.write(file, "one");
    await realFiles.write(file, "two");
    assert.equal(await realFiles.read(file), "two");
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["up.conf"], "no temp left");
    await realFiles.remove(file);
    await realFiles.remove(file);
    assert.equal(await realFiles.read(file), undefined);
    await assert.rejects(realFiles.writable(`${dir}/nope/up.conf`));
    await assert.rejects(realFiles.read(dir), "a folder is not missing");
    const res = await runCommand(["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert.deepEqual(res, { code: 3, output: "out\nerr\n" });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("real nginx -t accepts every rendered file (needs nginx)", async () => {
  const nginx = await nginxBinary();
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      `${dir}/nginx.conf`,
      `pid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\nevents {}\nhttp {\n` +
        `  include up.conf;\n  server { listen 127.0.0.1:1; location / { proxy_pass http://convergio_gateway; } }\n}\n`,
    );
    const sw = new NginxSwitch(
      {
        ...OPTS,
        file: `${dir}/up.conf`,
        conf: `${dir}/nginx.conf`,
        bin: nginx,
        reloadCmd: ["true"],
      },
      runCommand,
      realFiles,
    );
    for (const p of [0, 5, 25, 50, 100]) await sw.apply(p);
    await assert.rejects(
      new NginxSwitch(
        {
          ...OPTS,
          upstream: { ...OPTS.upstream, serverParams: "max_fails=banana" },
          file: `${dir}/up.conf`,
          conf: `${dir}/nginx.conf`,
          bin: nginx,
          reloadCmd: ["true"],
        },
        runCommand,
        realFiles,
      ).apply(5),
      /nginx -t refused the new upstream file .*max_fails/s,
    );
    assert.match(
      await Deno.readTextFile(`${dir}/up.conf`),
      /: step 100%\./,
      "the refused file was put back",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
