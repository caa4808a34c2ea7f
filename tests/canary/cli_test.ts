import assert from "node:assert/strict";
import { type CliDeps, main, TOKEN_ENV, USAGE } from "../../src/canary/cli.ts";
import type { Files } from "../../src/canary/nginx.ts";
import type { Sample } from "../../src/canary/signals.ts";
import { parseWeights } from "../../src/canary/upstream.ts";
import { FakeTimer, simulatedGateway } from "./_fakes.ts";
import { ROOT } from "./_support.ts";

/** scripts/canary.ts with read and env permissions only: a dry run that touched the network, a file or nginx would die. */
async function dryRunCli(args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-env", "scripts/canary.ts", ...args],
    cwd: ROOT,
    env: { DENO_COVERAGE_DIR: "coverage" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

Deno.test("--dry-run prints the version plan and the first upstream file, and touches nothing", async () => {
  const res = await dryRunCli([
    "version",
    "--stable=10.0.1.10:8080",
    "--canary=10.0.1.11:8080",
    "--upstream-file=/etc/nginx/nginx-upstream.conf",
    "--nginx-conf=/etc/nginx/nginx.conf",
    "--dry-run",
  ]);
  assert.equal(res.code, 0, res.stderr);
  assert.equal(res.stderr, "");
  const out = res.stdout;
  assert.match(
    out,
    /^gateway version canary: stable 10\.0\.1\.10:8080 \(http:\/\/10\.0\.1\.10:8080\) → canary 10\.0\.1\.11:8080 \(http:\/\/10\.0\.1\.11:8080\) \(dry run: no network, nothing written\)$/m,
  );
  assert.match(
    out,
    /`nginx -t -c \/etc\/nginx\/nginx\.conf`, `nginx -s reload -c \/etc\/nginx\/nginx\.conf`/,
  );
  assert.match(out, /^steps: 5% → 25% → 50% → 100%, then promote; each step at least 600s$/m);
  assert.match(out, /^ {2}RB-1: 5xx share of \/v1\/ requests over 300s > 2%$/m);
  assert.match(out, /^ {2}RB-2: P95 of non-streamed chat over 600s > the latency SLO/m);
  assert.match(
    out,
    /^ {6}server 10\.0\.1\.10:8080 weight=19 max_fails=3 fail_timeout=10s; {2}# stable$/m,
  );
  assert.match(
    out,
    /^ {6}server 10\.0\.1\.11:8080 weight=1 max_fails=3 fail_timeout=10s; {2}# canary$/m,
  );
});

Deno.test("--dry-run prints the flag plan and what global signals can and cannot see", async () => {
  const res = await dryRunCli([
    "flag",
    "plugin_permissions",
    '["net.http"]',
    "--gateway=https://agg.example.com",
    "--watch=https://edge-1.example.com",
    "--watch=https://edge-2.example.com",
    "--steps=10,50",
    "--step-seconds=120",
    "--dry-run",
  ]);
  assert.equal(res.code, 0, res.stderr);
  const out = res.stdout;
  assert.match(out, /^policy canary: flag plugin_permissions → \["net\.http"\] \(dry run/m);
  assert.match(
    out,
    /PUT \/admin\/flags\/plugin_permissions\/canary \{"percent":<step>,"value":\["net\.http"\]/,
  );
  assert.match(out, /^watch: 2 gateways \(all tenants\), every 10s$/m);
  assert.match(out, /^note: steps \(120s\) are shorter than the longest window \(600s\)/m);
  assert.match(out, /judged\n {2}through the global signals/);
});

interface Harness {
  deps: CliDeps;
  out: string[];
  err: string[];
  files: Map<string, string>;
  ran: string[];
  requests: string[];
}

/**
 * In-process CLI: a fake clock, fake nginx commands and files, and two
 * simulated gateways behind a fake fetch whose traffic split follows the
 * upstream file the CLI wrote.
 */
function harness(canaryErrors = 0): Harness {
  const files = new Map<string, string>();
  const ran: string[] = [];
  const requests: string[] = [];
  const out: string[] = [];
  const err: string[] = [];
  const share = (side: "stable" | "canary") => {
    const w = parseWeights(files.get("/nginx/up.conf") ?? "");
    const addr = side === "stable" ? "127.0.0.1:8080" : "127.0.0.1:8081";
    const total = Object.values(w).reduce((a, b) => a + b, 0);
    return total ? (w[addr] ?? 0) / total : side === "stable" ? 1 : 0;
  };
  const gateways: Record<string, ReturnType<typeof simulatedGateway>> = {
    "127.0.0.1:8080": simulatedGateway({ rps: 100, share: () => share("stable") }),
    "127.0.0.1:8081": simulatedGateway({
      rps: 100,
      share: () => share("canary"),
      errorRate: canaryErrors,
    }),
  };
  const timer = new FakeTimer();
  const sloBody = (s: Sample) => ({
    targets: { latency_ms: 800, window_days: 30 },
    slos: [
      { name: "availability", windows: { "30d": { total: s.requests, bad: s.errors } } },
      { name: "latency", windows: { "30d": { total: s.chat, bad: s.slow } } },
    ],
  });
  const metricsText = (s: Sample) =>
    [
      `convergio_http_requests_total{route="/v1/chat",method="POST",status_class="2xx"} ${
        s.requests - s.errors
      }`,
      `convergio_http_requests_total{route="/v1/chat",method="POST",status_class="5xx"} ${s.errors}`,
      `convergio_http_request_duration_seconds_bucket{le="0.8",route="/v1/chat",streaming="false"} ${
        s.chat - s.slow
      }`,
      `convergio_http_request_duration_seconds_bucket{le="+Inf",route="/v1/chat",streaming="false"} ${s.chat}`,
    ].join("\n");
  const fetch = async (url: string, init?: RequestInit) => {
    const u = new URL(url);
    requests.push(`${init?.method ?? "GET"} ${url}`);
    const gw = gateways[u.host];
    if (!gw) throw new TypeError("connection refused");
    const s = await gw(timer.now());
    if (u.pathname === "/admin/slo") {
      if (new Headers(init?.headers).get("authorization") !== "Bearer admin-jwt") {
        return new Response("{}", { status: 401 });
      }
      return Response.json(sloBody(s));
    }
    return new Response(metricsText(s));
  };
  const memory: Files = {
    read: (p) => Promise.resolve(files.get(p)),
    write: (p, t) => Promise.resolve(void files.set(p, t)),
    remove: (p) => Promise.resolve(void files.delete(p)),
    writable: () => Promise.resolve(),
  };
  return {
    deps: {
      fetch,
      timer,
      run: (argv) => {
        ran.push(argv.join(" "));
        return Promise.resolve({ code: 0, output: "" });
      },
      files: memory,
      io: { out: (l) => out.push(l), err: (l) => err.push(l) },
    },
    out,
    err,
    files,
    ran,
    requests,
  };
}

const VERSION = [
  "version",
  "--stable=127.0.0.1:8080",
  "--canary=127.0.0.1:8081",
  "--upstream-file=/nginx/up.conf",
  "--nginx-conf=/nginx/nginx.conf",
  "--steps=10,50,100",
  "--step-seconds=60",
  "--poll-seconds=10",
  "--error-window-seconds=30",
  "--latency-window-seconds=60",
];

Deno.test("version canary in process: healthy → promoted, exit 0, the canary alone in the upstream file", async () => {
  const h = harness();
  const code = await main(VERSION, { [TOKEN_ENV]: "admin-jwt" }, h.deps);
  assert.equal(code, 0, [...h.out, ...h.err].join("\n"));
  assert.deepEqual(parseWeights(h.files.get("/nginx/up.conf")!), { "127.0.0.1:8081": 1 });
  // nginx -t then reload for each of 3 steps and the promotion, after the preflight's nginx -t.
  assert.equal(h.ran.filter((r) => r === "nginx -t -c /nginx/nginx.conf").length, 5);
  assert.equal(h.ran.filter((r) => r === "nginx -s reload -c /nginx/nginx.conf").length, 4);
  assert.ok(h.requests.some((r) => r === "GET http://127.0.0.1:8081/admin/slo"));
  assert.ok(h.requests.some((r) => r === "GET http://127.0.0.1:8080/admin/slo"));
  assert.match(h.out.join("\n"), /^result: PROMOTED \(exit 0\)$/m);
  assert.deepEqual(h.err, []);
});

Deno.test("version canary in process: failing → rolled back, exit 1, the canary out of the upstream file", async () => {
  const h = harness(0.3);
  const code = await main(
    [...VERSION, "--source=metrics", "--admin-token=unused"],
    {},
    h.deps,
  );
  assert.equal(code, 1);
  assert.deepEqual(parseWeights(h.files.get("/nginx/up.conf")!), { "127.0.0.1:8080": 1 });
  assert.ok(h.requests.every((r) => r.endsWith("/metrics")));
  assert.match(
    h.out.join("\n"),
    /^ROLLBACK: RB-1: 5xx ratio 30\.0% \(90 of 300 requests\) over the last 30s > 2\.0% on the canary$/m,
  );
  assert.match(h.err.join("\n"), /^canary: rolled back: RB-1/);
});

Deno.test("a token /admin/slo refuses stops the rollout before anything changes (exit 2)", async () => {
  const h = harness();
  const code = await main(VERSION, { [TOKEN_ENV]: "wrong" }, h.deps);
  assert.equal(code, 2);
  assert.equal(h.files.size, 0, "no upstream file written");
  assert.ok(!h.ran.some((r) => r.includes("reload")));
  assert.match(
    h.out.join("\n"),
    /^reason: cannot read the canary's signals: GET http:\/\/127\.0\.0\.1:8081\/admin\/slo: HTTP 401/m,
  );
});

Deno.test("flag canary in process: an unreachable admin API stops before any change (exit 2)", async () => {
  const h = harness();
  const code = await main(
    ["flag", "routing_policy", "cheapest", "--gateway=http://10.9.9.9:1"],
    { [TOKEN_ENV]: "admin-jwt" },
    h.deps,
  );
  assert.equal(code, 2);
  assert.match(
    h.out.join("\n"),
    /^reason: preflight: GET http:\/\/10\.9\.9\.9:1\/admin\/flags: connection refused$/m,
  );
});

Deno.test("bad input: usage and exit 2, nothing run", async () => {
  const cases: Array<[string[], RegExp, Record<string, string>?]> = [
    [[], /name a kind: version or flag/],
    [["rollout"], /unknown canary kind "rollout"/],
    [["version", "extra"], /version takes no positional arguments: extra/],
    [["version"], /version needs --stable, --canary, --upstream-file/],
    [["version", "--stable=a:1", "--canary=a:1", "--upstream-file=f"], /the same server/],
    [
      ["version", "--stable=a:1;", "--canary=b:1", "--upstream-file=f"],
      /--stable "a:1;" must look like host:port/,
    ],
    [[...VERSION, "--stable-url=ftp://x"], /--stable-url must be an http\(s\) URL/],
    [[...VERSION, "--canary-url=::"], /--canary-url must be an http\(s\) URL/],
    [[...VERSION, "--keepalive=-1"], /--keepalive must be a whole number ≥ 0/],
    [[...VERSION, "--steps=50,25"], /--steps: steps must increase \(50 then 25\)/],
    [[...VERSION, "--step-seconds=0"], /--step-seconds must be a number of seconds > 0, not "0"/],
    [[...VERSION, "--poll-seconds="], /--poll-seconds must be a number of seconds > 0/],
    [[...VERSION, "--error-threshold=2"], /--error-threshold must be a ratio between 0 and 1/],
    [[...VERSION, "--latency-quantile=abc"], /--latency-quantile must be a ratio/],
    [[...VERSION, "--min-requests=1.5"], /--min-requests must be a whole number ≥ 1/],
    [[...VERSION, "--source=prometheus"], /--source must be slo or metrics, not "prometheus"/],
    [
      [...VERSION, "--source=metrics", "--latency-slo-ms=0"],
      /--latency-slo-ms must be milliseconds > 0/,
    ],
    [VERSION, /an admin token is needed: --admin-token or env CONVERGIO_ADMIN_TOKEN/, {}],
    [["flag", "routing_policy"], /flag needs exactly <name> <value>/],
    [["flag", "routing_policy", "cheapest", "x"], /flag needs exactly <name> <value>/],
    [["flag", "routing_policy", "cheapest"], /flag needs --gateway URL/],
    [["flag", "a", "b", "--gateway=agg:8080"], /--gateway must be an http\(s\) URL/],
    [["flag", "a", "b", "--gateway=http://a", "--source=metrics"], /an admin token is needed/, {}],
    [["version", "--bogus"], /Unknown option '--bogus'/],
  ];
  for (const [args, message, env] of cases) {
    const h = harness();
    const code = await main(args, env ?? { [TOKEN_ENV]: "admin-jwt" }, h.deps);
    assert.equal(code, 2, `${args.join(" ")}: ${h.out.join("\n")}`);
    assert.match(h.err.join("\n"), message, args.join(" "));
    assert.match(h.err.join("\n"), /usage:\n {2}deno task canary version/);
    assert.deepEqual(h.ran, []);
    assert.deepEqual(h.requests, []);
  }
  const help = harness();
  assert.equal(await main(["--help"], {}, help.deps), 0);
  assert.deepEqual(help.out, [USAGE]);
});
