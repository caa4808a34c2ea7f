/**
 * The observability assets stay true to the code: Prometheus rules and config
 * pass promtool (syntax and the rule unit tests), every metric the Grafana
 * dashboard and the rules query is one the real gateway exports (and every
 * WebSocket, voice and first-token series they select is in a real scrape
 * after real HTTP, WebSocket chat and voice traffic), every alert has a
 * runbook that names it and its expression, and a real /metrics scrape passes
 * `promtool check metrics`.
 *
 * Needs `promtool` on PATH (Debian: `apt-get install prometheus`).
 */
import assert from "node:assert/strict";
import { startGateway, testConfig } from "../support/gateway.ts";

const ROOT = decodeURIComponent(new URL("../../", import.meta.url).pathname);
const PROM_DIR = `${ROOT}infra/prometheus`;
const DASHBOARD = `${ROOT}infra/grafana/convergio-dashboard.json`;
const RUNBOOK_DIR = `${ROOT}docs/runbooks`;
const RULE_FILES = ["recording_rules.yml", "alert_rules.yml"];

const RUNBOOKS = ["RB-1", "RB-2", "RB-3", "RB-4", "RB-5"];

// ------------------------------------------------------------------ helpers

async function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; stdin?: string } = {},
): Promise<{ code: number; output: string }> {
  const child = new Deno.Command(cmd, {
    args,
    cwd: opts.cwd ?? ROOT,
    stdin: opts.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (opts.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(opts.stdin));
    await writer.close();
  }
  const { code, stdout, stderr } = await child.output();
  const text = new TextDecoder();
  return { code, output: `${text.decode(stdout)}${text.decode(stderr)}` };
}

async function promtool(args: string[], opts: { cwd?: string; stdin?: string } = {}) {
  const res = await run("promtool", args, opts);
  assert.equal(res.code, 0, `promtool ${args.join(" ")} failed:\n${res.output}`);
  return res.output;
}

type Yaml = string | Yaml[] | { [key: string]: Yaml };
type YamlMap = { [key: string]: Yaml };

/**
 * A YAML reader for the subset the rule files use: block mappings and
 * sequences, plain and quoted scalars, `|`/`>` block scalars, comments, empty
 * `[]`/`{}`. Anything else throws rather than being misread; the rule counts
 * are cross-checked against promtool's own.
 */
function parseYaml(text: string): Yaml {
  const lines = text.split("\n").map((raw) => ({
    raw,
    indent: raw.search(/\S|$/),
    body: raw.trim(),
  }));
  let i = 0;
  const skip = () => {
    while (i < lines.length && (lines[i].body === "" || lines[i].body.startsWith("#"))) i++;
  };
  const scalar = (s: string): Yaml => {
    if (s.startsWith('"')) {
      const m = /^"((?:[^"\\]|\\.)*)"\s*(#.*)?$/.exec(s);
      if (!m) throw new Error(`unsupported YAML scalar: ${s}`);
      return JSON.parse(`"${m[1]}"`);
    }
    if (s.startsWith("'")) {
      const m = /^'((?:[^']|'')*)'\s*(#.*)?$/.exec(s);
      if (!m) throw new Error(`unsupported YAML scalar: ${s}`);
      return m[1].replaceAll("''", "'");
    }
    const plain = s.replace(/\s+#.*$/, "").trim();
    if (plain === "[]") return [];
    if (plain === "{}") return {};
    if (/^[[{&*!|>]/.test(plain)) throw new Error(`unsupported YAML value: ${s}`);
    return plain;
  };
  const blockScalar = (header: string, parentIndent: number): string => {
    const body: string[] = [];
    while (i < lines.length && (lines[i].body === "" || lines[i].indent > parentIndent)) {
      body.push(lines[i].raw);
      i++;
    }
    while (body.length && body[body.length - 1].trim() === "") body.pop();
    const cut = Math.min(...body.filter((l) => l.trim()).map((l) => l.search(/\S/)));
    const content = body.map((l) => l.slice(cut));
    return header.startsWith(">") ? content.join(" ") : content.join("\n");
  };
  const node = (indent: number): Yaml => {
    skip();
    if (i >= lines.length || lines[i].indent < indent) return "";
    const at = lines[i].indent;
    return lines[i].body === "-" || lines[i].body.startsWith("- ") ? sequence(at) : mapping(at);
  };
  const mapping = (indent: number): YamlMap => {
    const out: YamlMap = {};
    for (skip(); i < lines.length && lines[i].indent === indent; skip()) {
      const { body } = lines[i];
      const m = /^([\w.-]+):(?:\s+(.*))?$/.exec(body);
      if (!m || body.startsWith("- ")) throw new Error(`unsupported YAML line: ${body}`);
      i++;
      const rest = m[2] ?? "";
      if (rest === "") out[m[1]] = node(indent + 1);
      else if (/^[|>][-+]?$/.test(rest)) out[m[1]] = blockScalar(rest, indent);
      else out[m[1]] = scalar(rest);
    }
    if (i < lines.length && lines[i].indent > indent) {
      throw new Error(`unexpected indentation: ${lines[i].raw}`);
    }
    return out;
  };
  const sequence = (indent: number): Yaml[] => {
    const out: Yaml[] = [];
    for (skip(); i < lines.length && lines[i].indent === indent; skip()) {
      const line = lines[i];
      if (line.body !== "-" && !line.body.startsWith("- ")) break;
      const content = line.body.slice(1).trimStart();
      if (content === "") {
        i++;
        out.push(node(indent + 1));
      } else if (/^[\w.-]+:(\s|$)/.test(content)) {
        // "- key: value" opens a mapping whose keys sit two columns further in.
        lines[i] = { raw: line.raw, indent: indent + 2, body: content };
        out.push(mapping(indent + 2));
      } else {
        i++;
        out.push(scalar(content));
      }
    }
    return out;
  };
  const doc = node(0);
  skip();
  if (i < lines.length) throw new Error(`unparsed YAML from: ${lines[i].raw}`);
  return doc;
}

interface Rule {
  kind: "alert" | "record";
  name: string;
  expr: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

async function loadRules(file: string): Promise<Rule[]> {
  const doc = parseYaml(await Deno.readTextFile(`${PROM_DIR}/${file}`)) as YamlMap;
  return (doc.groups as YamlMap[]).flatMap((g) =>
    (g.rules as YamlMap[]).map((r) => ({
      kind: r.alert !== undefined ? "alert" as const : "record" as const,
      name: String(r.alert ?? r.record),
      expr: String(r.expr),
      labels: (r.labels ?? {}) as Record<string, string>,
      annotations: (r.annotations ?? {}) as Record<string, string>,
    }))
  );
}

const squash = (s: string) => s.replace(/\s+/g, " ").trim();

/** PromQL words that are not metric names. */
const PROMQL_WORDS = new Set([
  "and",
  "or",
  "unless",
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "bool",
  "offset",
  "inf",
  "nan",
]);

/**
 * The metric (and recording rule) names a PromQL expression selects: strings,
 * label matchers, ranges, grouping label lists, offsets and dashboard
 * variables removed; then every identifier not called as a function
 * (sum, rate, histogram_quantile...) and not a keyword.
 */
function selectedNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ")
    .replace(/\boffset\s+-?[\w$]+/g, " ")
    .replace(/\$\{[^}]*\}|\$\w+/g, " ");
  const names = new Set<string>();
  for (const m of stripped.matchAll(/(?<![\w:.])[a-zA-Z_:][\w:]*(?![\w:])(?!\s*\()/g)) {
    if (!PROMQL_WORDS.has(m[0].toLowerCase())) names.add(m[0]);
  }
  return [...names];
}

/**
 * Series of the WebSocket sessions (chat and voice) and of first-token latency:
 * every selector of these in the dashboard and the rules must match a sample
 * of the scrape after traffic, not only name a metric the gateway declares
 * (labelled counters and histograms have no sample before their first use).
 */
const SERIES_CHECKED =
  /^(convergio_ws_|convergio_voice_|gen_ai_server_time_to_first_token_seconds)/;

/** The gateway's config for the scrape: the chat demo provider and a realtime (voice) one. */
function trafficConfig() {
  return testConfig({
    providers: { demo: { protocol: "mock" }, "demo-voice": { protocol: "realtime_mock" } },
    models: {
      "convergio-demo": {
        deployments: [{ provider: "demo", model: "demo-large" }],
        price: { input_per_1m: 2, output_per_1m: 8 },
      },
      "convergio-voice": {
        deployments: [{ provider: "demo-voice", model: "rt" }],
        price: { input_per_1m: 32, output_per_1m: 64 },
      },
    },
  });
}

interface Frame {
  type: string;
  event_id?: number;
  session_id?: string;
  resumed?: boolean;
  [key: string]: unknown;
}

/** A WebSocket client of the gateway's protocol: `convergio.v1` plus the token as `bearer.<jwt>`. */
async function openSocket(url: string, token: string) {
  const ws = new WebSocket(url, ["convergio.v1", `bearer.${token}`]);
  const frames: Frame[] = [];
  ws.onmessage = (e) => frames.push(JSON.parse(e.data));
  const closed = new Promise<CloseEvent>((resolve) => ws.addEventListener("close", resolve));
  const wait = async (type: string): Promise<Frame> => {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const error = frames.find((f) => f.type === "error");
      assert.equal(error, undefined, `error frame on ${url}`);
      const frame = frames.find((f) => f.type === type);
      if (frame) return frame;
      if (Date.now() > deadline) {
        throw new Error(`no ${type} frame on ${url}; got ${JSON.stringify(frames)}`);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  const ready = await wait("session.ready");
  assert.equal(ws.protocol, "convergio.v1");
  return {
    ready,
    wait,
    send: (frame: Record<string, unknown>) => ws.send(JSON.stringify(frame)),
    lastEventId: () => Math.max(...frames.map((f) => f.event_id ?? 0)),
    close: async (code: number) => {
      ws.close(code, code === 1000 ? "done" : "test dropout");
      return (await closed).code;
    },
  };
}

/**
 * Drops a socket abnormally (close code 4000), then resumes its session with
 * the last event id seen (a reconnect attempt and a success), and says goodbye.
 */
async function dropAndResume(
  url: string,
  token: string,
  socket: Awaited<ReturnType<typeof openSocket>>,
) {
  const sessionId = socket.ready.session_id;
  assert.ok(sessionId, "session.ready names the session");
  const lastEventId = socket.lastEventId();
  assert.equal(await socket.close(4000), 4000);
  const again = await openSocket(
    `${url}?session_id=${sessionId}&last_event_id=${lastEventId}`,
    token,
  );
  assert.equal(again.ready.session_id, sessionId);
  assert.equal(again.ready.resumed, true);
  assert.equal(again.ready.frames_lost, undefined);
  assert.equal(await again.close(1000), 1000);
}

/**
 * Starts the real gateway, sends managed traffic (chat plain and streamed over
 * HTTP, chat over /v1/ws, a push-to-talk turn over /v1/voice/ws, then one
 * dropout and resume per socket kind) and scrapes /metrics once every series
 * the WebSocket traffic makes is there (sockets close asynchronously).
 */
async function scrapeAfterTraffic(): Promise<string> {
  const gw = await startGateway(trafficConfig());
  try {
    const token = await gw.token({ tenant: "acme", mode: "managed" });
    const post = async (path: string, body: unknown) => {
      const res = await fetch(`${gw.url}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: JSON.stringify(body),
      });
      await res.text();
      assert.equal(res.status, 200, `POST ${path}`);
    };
    const messages = [{ role: "user", content: "Hello" }];
    await post("/v1/chat/completions", { model: "convergio-demo", messages });
    await post("/v1/chat/completions", { model: "convergio-demo", messages, stream: true });
    await post("/v1/chat", { prompt: "Hello" });
    await post("/v1/chat/stream", { prompt: "Hello" });

    const base = gw.url.replace(/^http/, "ws");
    const chatUrl = `${base}/v1/ws`;
    const chat = await openSocket(chatUrl, token);
    chat.send({ type: "chat.start", request_id: "r1", prompt: "hi" });
    await chat.wait("chat.complete");
    await dropAndResume(chatUrl, token, chat);

    const voiceUrl = `${base}/v1/voice/ws`;
    const voice = await openSocket(voiceUrl, token);
    voice.send({
      type: "voice.start",
      request_id: "v1",
      codec: "pcm16",
      sample_rate: 16000,
      mode: "push-to-talk",
    });
    await voice.wait("voice.ready");
    // 20 ms of silence per chunk: 320 samples of PCM16 at 16 kHz.
    const silence = btoa(String.fromCharCode(...new Uint8Array(640)));
    for (let i = 0; i < 5; i++) {
      voice.send({ type: "voice.chunk", request_id: "v1", bytes_base64: silence });
    }
    voice.send({ type: "voice.stop", request_id: "v1" });
    await voice.wait("voice.complete");
    await dropAndResume(voiceUrl, token, voice);

    const expected = [
      ...["chat", "voice"].flatMap((kind) => [
        `convergio_ws_connect_seconds_count{kind="${kind}"}`,
        `convergio_ws_sessions_total{kind="${kind}"}`,
        `convergio_ws_dropouts_total{kind="${kind}",reason="4000"}`,
        `convergio_ws_reconnect_attempts_total{kind="${kind}"}`,
        `convergio_ws_reconnect_successes_total{kind="${kind}"}`,
      ]),
      `convergio_voice_audio_seconds_total{direction="in"}`,
      `convergio_voice_audio_seconds_total{direction="out"}`,
    ];
    const deadline = Date.now() + 5_000;
    for (;;) {
      const res = await fetch(`${gw.url}/metrics`);
      assert.equal(res.status, 200);
      const scrape = await res.text();
      const missing = expected.filter((series) => !scrape.includes(`\n${series} `));
      if (!missing.length) return scrape;
      if (Date.now() > deadline) throw new Error(`missing from /metrics: ${missing.join(", ")}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  } finally {
    await gw.close();
  }
}

/** Every series name a scrape can hold: `# TYPE` names, histograms with their suffixes. */
function exportedNames(scrape: string): Set<string> {
  const names = new Set<string>();
  for (const [, name, type] of scrape.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    names.add(name);
    if (type === "histogram") {
      for (const s of ["_bucket", "_sum", "_count"]) names.add(name + s);
    }
    if (type === "summary") { for (const s of ["_sum", "_count"]) names.add(name + s); }
  }
  return names;
}

const LABEL = /([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"/g;

/** The samples of a scrape: metric name and labels of every sample line. */
function samples(scrape: string): Array<{ name: string; labels: Record<string, string> }> {
  const out = [];
  for (const line of scrape.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+\S+/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const [, k, , v] of (m[2] ?? "").matchAll(LABEL)) labels[k] = JSON.parse(`"${v}"`);
    out.push({ name: m[1], labels });
  }
  return out;
}

interface Selector {
  name: string;
  matchers: Array<{ label: string; op: string; value: string }>;
  text: string;
}

/**
 * The vector selectors of an expression: metric name and label matchers.
 * Grouping label lists, functions and keywords are not selectors.
 */
function selectors(expr: string): Selector[] {
  const out: Selector[] = [];
  const stripped = expr.replace(
    /\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g,
    " ",
  );
  const re =
    /(?<![\w:.$])([a-zA-Z_:][\w:]*)(?![\w:])\s*(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?(?!\s*\()/g;
  for (const m of stripped.matchAll(re)) {
    if (PROMQL_WORDS.has(m[1].toLowerCase())) continue;
    const matchers = [...(m[2] ?? "").matchAll(LABEL)].map(([, label, op, value]) => ({
      label,
      op,
      value: JSON.parse(`"${value}"`) as string,
    }));
    out.push({ name: m[1], matchers, text: m[0].trim() });
  }
  return out;
}

/** Whether a sample matches a selector; regex matchers are anchored, as in PromQL. */
function matches(s: Selector, sample: { name: string; labels: Record<string, string> }): boolean {
  if (sample.name !== s.name) return false;
  return s.matchers.every(({ label, op, value }) => {
    const v = sample.labels[label] ?? "";
    const re = () => new RegExp(`^(?:${value})$`).test(v);
    return op === "=" ? v === value : op === "!=" ? v !== value : op === "=~" ? re() : !re();
  });
}

interface Panel {
  type: string;
  title: string;
  targets?: Array<{ expr?: string }>;
  panels?: Panel[];
}

async function loadDashboard(): Promise<{ title: string; panels: Panel[] }> {
  return JSON.parse(await Deno.readTextFile(DASHBOARD));
}

function allPanels(panels: Panel[]): Panel[] {
  return panels.flatMap((p) => [p, ...allPanels(p.panels ?? [])]);
}

// -------------------------------------------------------------------- tests

Deno.test("promtool check rules passes and counts the same rules as this test reads", async () => {
  const out = await promtool(["check", "rules", ...RULE_FILES], { cwd: PROM_DIR });
  for (const file of RULE_FILES) {
    const m = new RegExp(`Checking ${file}\\s+SUCCESS: (\\d+) rules found`).exec(out);
    assert.ok(m, `no rule count for ${file} in:\n${out}`);
    assert.equal((await loadRules(file)).length, Number(m[1]), file);
  }
  assert.ok((await loadRules("recording_rules.yml")).every((r) => r.kind === "record"));
  assert.ok((await loadRules("alert_rules.yml")).every((r) => r.kind === "alert"));
});

Deno.test("promtool test rules: the rule unit tests pass", async () => {
  const out = await promtool(["test", "rules", "rules_test.yml"], { cwd: PROM_DIR });
  assert.match(out, /SUCCESS/);
});

Deno.test("rules_test.yml has a firing and a non-firing case for every alert", async () => {
  const alerts = (await loadRules("alert_rules.yml")).map((r) => r.name);
  const doc = parseYaml(await Deno.readTextFile(`${PROM_DIR}/rules_test.yml`)) as YamlMap;
  assert.deepEqual(doc.rule_files, RULE_FILES);
  const cases = (doc.tests as YamlMap[]).flatMap((t) => (t.alert_rule_test ?? []) as YamlMap[]);
  for (const alert of alerts) {
    const mine = cases.filter((c) => c.alertname === alert);
    assert.ok(mine.some((c) => (c.exp_alerts as Yaml[]).length > 0), `${alert}: no firing case`);
    assert.ok(
      mine.some((c) => (c.exp_alerts as Yaml[]).length === 0),
      `${alert}: no non-firing case`,
    );
  }
  for (const c of cases) assert.ok(alerts.includes(String(c.alertname)), `${c.alertname}`);
});

Deno.test("promtool check config: the example scrape config and its rule files", async () => {
  const out = await promtool(["check", "config", "infra/prometheus/prometheus.yml"]);
  for (const file of RULE_FILES) assert.match(out, new RegExp(`Checking .*${file}`));
});

Deno.test("the PromQL name extractor skips functions, keywords, labels, strings and variables", () => {
  assert.deepEqual(
    selectedNames(
      `histogram_quantile(0.95, sum by (le, route) (rate(foo_bucket{route=~"/v1/.*",le!="bar"}[$__rate_interval])))` +
        ` / on (instance) group_left (job) max(baz offset 5m) > 1e3 and convergio:x:ratio_rate5m` +
        ` or vector(0) unless topk(10, qux_total) * ${"${factor}"}`,
    ),
    ["foo_bucket", "baz", "convergio:x:ratio_rate5m", "qux_total"],
  );
});

Deno.test("the selector parser reads names and matchers; matching is anchored like PromQL", () => {
  const all = selectors(
    `sum(rate(foo_total{kind="voice",reason!~"4.*"}[10m])) / on (x) bar_bucket{t=~"ws|ws-voice"}` +
      ` and baz`,
  );
  assert.deepEqual(all.map((s) => s.name), ["foo_total", "bar_bucket", "baz"]);
  const [a, b] = all;
  assert.deepEqual(a.matchers, [
    { label: "kind", op: "=", value: "voice" },
    { label: "reason", op: "!~", value: "4.*" },
  ]);
  const sample = (labels: Record<string, string>) => ({ name: "bar_bucket", labels });
  assert.ok(matches(b, sample({ t: "ws-voice" })));
  assert.ok(!matches(b, sample({ t: "wss" })), "anchored");
  assert.ok(!matches(a, { name: "foo_total", labels: { kind: "voice", reason: "4000" } }));
  assert.ok(matches(a, { name: "foo_total", labels: { kind: "voice", reason: "abnormal_1006" } }));
});

Deno.test("every metric the dashboard and the rules query is exported by the gateway", async () => {
  const scrape = await scrapeAfterTraffic();
  const exported = exportedNames(scrape);
  const series = samples(scrape);
  // The scrape is real: the golden-signal metrics are there.
  for (const name of ["convergio_http_requests_total", "convergio_slo_burn_rate"]) {
    assert.ok(exported.has(name), `${name} missing from /metrics`);
  }
  const records = new Set((await loadRules("recording_rules.yml")).map((r) => r.name));
  const alerts = await loadRules("alert_rules.yml");

  const problems: string[] = [];
  let seriesChecked = 0;
  const check = (where: string, expr: string) => {
    const names = selectedNames(expr);
    if (names.length === 0) problems.push(`${where}: selects no metric: ${expr}`);
    for (const name of names) {
      if (name.includes(":")) {
        if (!records.has(name)) problems.push(`${where}: no recording rule ${name}`);
      } else if (!exported.has(name)) {
        problems.push(`${where}: ${name} is not exported by the gateway`);
      }
    }
    for (const s of selectors(expr).filter((s) => SERIES_CHECKED.test(s.name))) {
      seriesChecked++;
      if (!series.some((x) => matches(s, x))) {
        problems.push(`${where}: ${s.text} matches no series of the scrape after traffic`);
      }
    }
  };

  const dashboard = await loadDashboard();
  let targets = 0;
  for (const panel of allPanels(dashboard.panels)) {
    if (panel.type === "row") continue;
    assert.ok(panel.targets?.length, `panel "${panel.title}" has no targets`);
    for (const t of panel.targets) {
      assert.ok(t.expr, `panel "${panel.title}" has a target without expr`);
      check(`panel "${panel.title}"`, t.expr);
      targets++;
    }
  }
  assert.ok(targets >= 40, `only ${targets} dashboard targets`);
  for (const r of [...await loadRules("recording_rules.yml"), ...alerts]) {
    check(`${r.kind} ${r.name}`, r.expr);
  }
  assert.deepEqual(problems, []);
  assert.ok(seriesChecked >= 20, `only ${seriesChecked} WebSocket/voice/first-token selectors`);
});

Deno.test("the dashboard has one row per golden signal", async () => {
  const dashboard = await loadDashboard();
  const rows = dashboard.panels.filter((p) => p.type === "row").map((p) => p.title);
  assert.deepEqual(rows, [
    "Traffic & errors",
    "Latency",
    "Providers & failover",
    "Metering queue & workers",
    "Cost (managed lane)",
    "Guardrails & budgets",
    "Voice & WebSocket",
    "SLO & error budget",
  ]);
  const titles = allPanels(dashboard.panels).map((p) => p.title);
  assert.equal(new Set(titles).size, titles.length, "panel titles are unique");
});

Deno.test("every alert has severity, a runbook file that names it and its expression", async () => {
  const alerts = await loadRules("alert_rules.yml");
  const used = new Set<string>();
  for (const a of alerts) {
    assert.match(a.labels.severity ?? "", /^(page|ticket)$/, `${a.name}: severity`);
    assert.ok(RUNBOOKS.includes(a.labels.runbook), `${a.name}: runbook label ${a.labels.runbook}`);
    assert.equal(a.annotations.runbook_url, `docs/runbooks/${a.labels.runbook}.md`, a.name);
    assert.ok(a.annotations.summary, `${a.name}: summary`);
    const text = await Deno.readTextFile(`${ROOT}${a.annotations.runbook_url}`);
    assert.ok(text.includes(a.name), `${a.annotations.runbook_url} does not name ${a.name}`);
    assert.ok(
      squash(text).includes(squash(a.expr)),
      `${a.annotations.runbook_url} does not quote the expression of ${a.name}:\n${a.expr}`,
    );
    used.add(a.labels.runbook);
  }
  assert.deepEqual([...used].sort(), RUNBOOKS, "every runbook has an alert");
});

Deno.test("runbooks have Detect, Triage, Mitigate and Comms, and cite real panel titles", async () => {
  const dashboard = await loadDashboard();
  const titles = new Set(allPanels(dashboard.panels).map((p) => p.title));
  for (const rb of RUNBOOKS) {
    const text = await Deno.readTextFile(`${RUNBOOK_DIR}/${rb}.md`);
    assert.match(text, new RegExp(`^# ${rb} `, "m"));
    for (const section of ["Detect", "Triage", "Mitigate", "Comms"]) {
      assert.match(text, new RegExp(`^## ${section}$`, "m"), `${rb}: section ${section}`);
    }
    // Bold text in a runbook is a dashboard row or panel title (markdown may wrap it).
    for (const [, bold] of text.matchAll(/\*\*([^*]+)\*\*/g)) {
      assert.ok(titles.has(squash(bold)), `${rb}: "${squash(bold)}" is not a dashboard title`);
    }
  }
});

Deno.test("a real /metrics scrape after traffic passes promtool check metrics", async () => {
  const scrape = await scrapeAfterTraffic();
  assert.match(scrape, /^convergio_http_requests_total\{.*status_class="2xx"\} [1-9]/m);
  for (const transport of ["sse", "ws", "ws-voice"]) {
    assert.match(
      scrape,
      new RegExp(
        `^gen_ai_server_time_to_first_token_seconds_count\\{.*transport="${transport}"`,
        "m",
      ),
    );
  }
  for (const kind of ["chat", "voice"]) {
    assert.match(
      scrape,
      new RegExp(`^convergio_ws_dropouts_total\\{kind="${kind}",reason="4000"\\} 1$`, "m"),
    );
    assert.match(
      scrape,
      new RegExp(`^convergio_ws_reconnect_successes_total\\{kind="${kind}"\\} 1$`, "m"),
    );
  }
  await promtool(["check", "metrics"], { stdin: scrape });
});
