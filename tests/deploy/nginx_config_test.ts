/**
 * The self-hosted reverse proxy (infra/selfhost/nginx.conf): `nginx -t`
 * accepts it as shipped, its settings match the gateway's own limits, and a
 * real nginx running it (logs and port moved to a temp dir, the upstream file
 * swapped as a canary rollout would) proxies real SSE and WebSocket traffic
 * to a real gateway.
 *
 * Needs nginx (Debian: `apt-get install -y nginx`); .ci/run installs it.
 */
import assert from "node:assert/strict";
import { buildConfigSchema } from "../../src/config.ts";
import { startGateway, testConfig } from "../support/gateway.ts";

const ROOT = decodeURIComponent(new URL("../../", import.meta.url).pathname);
const CONF = `${ROOT}infra/selfhost/nginx.conf`;
const UPSTREAM = `${ROOT}infra/selfhost/nginx-upstream.conf`;

async function nginxBinary(): Promise<string> {
  for (const candidate of ["nginx", "/usr/sbin/nginx"]) {
    try {
      await new Deno.Command(candidate, { args: ["-v"], stdout: "null", stderr: "null" }).output();
      return candidate;
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
  throw new Error(
    "nginx is not installed, so infra/selfhost/nginx.conf cannot be validated: " +
      "apt-get install -y nginx (.ci/run installs it)",
  );
}

async function run(cmd: string, args: string[]) {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder();
  return { code: out.code, output: text.decode(out.stdout) + text.decode(out.stderr) };
}

/** `replace` that fails the test when the config no longer has what it replaces. */
function swap(text: string, from: string | RegExp, to: string): string {
  assert.ok(typeof from === "string" ? text.includes(from) : from.test(text), `not found: ${from}`);
  return text.replace(from, to);
}

const seconds = (value: string) => {
  const m = /^(\d+)(s|m)?$/.exec(value);
  assert.ok(m, `not a duration: ${value}`);
  return Number(m[1]) * (m[2] === "m" ? 60 : 1);
};

/** The body of `location <match> { ... }` (no nested blocks in ours). */
function location(conf: string, match: string): string {
  const start = conf.indexOf(`location ${match} {`);
  assert.ok(start >= 0, `no location ${match}`);
  return conf.slice(start, conf.indexOf("}", start));
}

Deno.test("nginx -t accepts infra/selfhost/nginx.conf as shipped", async () => {
  const nginx = await nginxBinary();
  const res = await run(nginx, ["-t", "-c", CONF]);
  assert.equal(res.code, 0, `nginx -t -c ${CONF} failed (it runs as root in CI):\n${res.output}`);
  assert.match(res.output, /syntax is ok/);
});

Deno.test("nginx.conf matches the gateway's limits and routes", async () => {
  const conf = await Deno.readTextFile(CONF);
  const upstream = await Deno.readTextFile(UPSTREAM);
  const defaults = buildConfigSchema({}).parse({ providers: {}, models: {} });

  assert.match(conf, /^\s*include nginx-upstream\.conf;$/m);
  assert.match(upstream, /^upstream convergio_gateway \{$/m);
  assert.match(
    upstream,
    /^\s*#\s*server \S+ weight=\d+;\s*# canary$/m,
    "a commented weighted example",
  );
  assert.match(upstream, /^\s*keepalive \d+;$/m);

  // client_max_body_size = server.max_body_bytes.
  const body = /client_max_body_size (\d+)m;/.exec(conf);
  assert.ok(body);
  assert.equal(Number(body[1]) * 1024 * 1024, defaults.server.max_body_bytes);

  // WebSockets: both paths, upgrade headers, timeouts beyond the idle timeout.
  const wsMatch = "~ ^/v1/(voice/)?ws$";
  const ws = location(conf, wsMatch);
  const wsPath = new RegExp(wsMatch.slice(2));
  for (const path of ["/v1/ws", "/v1/voice/ws"]) assert.ok(wsPath.test(path), path);
  for (const path of ["/v1/wsx", "/v1/chat/ws", "/v1/voice/ws/x"]) {
    assert.ok(!wsPath.test(path), path);
  }
  assert.match(ws, /proxy_set_header Upgrade \$http_upgrade;/);
  assert.match(ws, /proxy_set_header Connection \$connection_upgrade;/);
  assert.match(ws, /proxy_set_header X-Request-Id \$cvg_request_id;/);
  for (const directive of ["proxy_read_timeout", "proxy_send_timeout"]) {
    const value = new RegExp(`${directive} (\\w+);`).exec(ws)?.[1];
    assert.ok(value, `${directive} in the WebSocket location`);
    assert.ok(seconds(value) * 1000 > defaults.ws.idle_timeout_ms, `${directive} ${value}`);
  }

  // SSE: not buffered, for the V7 and the OpenAI-compatible streams.
  const sse = location(conf, "~ ^/v1/chat/(stream|completions)$");
  assert.match(sse, /proxy_buffering off;/);
  // Read timeout above a whole routed request: attempts × per-attempt timeout.
  const read = /^ {4}proxy_read_timeout (\w+);$/m.exec(conf)?.[1];
  assert.ok(read);
  assert.ok(seconds(read) * 1000 > defaults.routing.timeout_ms * defaults.routing.max_attempts);

  // /metrics only from inside.
  const metrics = location(conf, "= /metrics");
  assert.match(metrics, /deny all;/);
  for (const allow of metrics.matchAll(/^\s*allow (\S+);/gm)) {
    assert.match(allow[1], /^(127\.0\.0\.1|::1|10\.|172\.(1[6-9]|2\d|3[01])\.|192\.168\.)/);
  }
  assert.match(conf, /proxy_set_header X-Request-Id \$cvg_request_id;/);
});

Deno.test("a real nginx on this config proxies SSE, WebSockets and request ids to a real gateway", async () => {
  const nginx = await nginxBinary();
  const gw = await startGateway(testConfig({
    providers: { demo: { protocol: "mock", first_token_ms: 50, inter_token_ms: 120 } },
  }));
  const dir = await Deno.makeTempDir();
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  let conf = await Deno.readTextFile(CONF);
  conf = swap(conf, /^user www-data;$/m, Deno.uid() === 0 ? "user root;" : "");
  conf = swap(conf, "pid /run/nginx.pid;", `pid ${dir}/nginx.pid;`);
  conf = swap(conf, "/var/log/nginx/error.log", `${dir}/error.log`);
  conf = swap(conf, "/var/log/nginx/convergio-access.log", `${dir}/access.log`);
  conf = swap(conf, /^ {8}listen 80;$/m, `        listen 127.0.0.1:${port};`);
  conf = swap(
    conf,
    /^http \{$/m,
    `http {\n${
      ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .map((t) => `    ${t}_temp_path ${dir}/${t};`).join("\n")
    }`,
  );
  await Deno.writeTextFile(`${dir}/nginx.conf`, conf);
  // What a canary rollout does: a new upstream file beside the main config.
  const gwPort = new URL(gw.url).port;
  await Deno.writeTextFile(
    `${dir}/nginx-upstream.conf`,
    swap(await Deno.readTextFile(UPSTREAM), "server 127.0.0.1:8080", `server 127.0.0.1:${gwPort}`),
  );
  const child = new Deno.Command(nginx, {
    args: ["-c", `${dir}/nginx.conf`, "-e", `${dir}/error.log`, "-g", "daemon off;"],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const base = `http://127.0.0.1:${port}`;
  try {
    for (let i = 0;; i++) {
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port })).close();
        break;
      } catch (err) {
        if (i === 50) throw new Error(`nginx did not listen: ${err}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const token = await gw.token();

    // x-request-id: the client's passes through; without one, nginx's reaches the gateway.
    const mine = await fetch(`${base}/healthz`, { headers: { "x-request-id": "nginx-test-1" } });
    assert.equal(mine.status, 200);
    assert.deepEqual(await mine.json(), { status: "ok", role: "edge" });
    assert.equal(mine.headers.get("x-request-id"), "nginx-test-1");
    const theirs = await fetch(`${base}/healthz`);
    await theirs.body?.cancel();
    const minted = theirs.headers.get("x-request-id") ?? "";
    assert.match(minted, /^[0-9a-f]{32}$/, "nginx's $request_id, kept by the gateway");
    // nginx writes the access line as it finalises the request, which may be after the client
    // has the response: wait for it, bounded.
    let access = "";
    for (let i = 0; i < 50 && !access.includes(`"request_id":"${minted}"`); i++) {
      if (i) await new Promise((r) => setTimeout(r, 100));
      access = await Deno.readTextFile(`${dir}/access.log`);
    }
    assert.ok(access.includes(`"request_id":"${minted}"`), access);

    // SSE: tokens arrive as they are written, not when the response ends.
    const started = performance.now();
    const sse = await fetch(`${base}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({
        model: "convergio-demo",
        stream: true,
        messages: [{ role: "user", content: "one two three four five six" }],
      }),
    });
    assert.equal(sse.status, 200);
    const arrivals: number[] = [];
    let text = "";
    for await (const chunk of sse.body!.pipeThrough(new TextDecoderStream())) {
      arrivals.push(performance.now() - started);
      text += chunk;
    }
    assert.match(text, /data: \[DONE\]/);
    assert.ok(arrivals.length >= 5, `${arrivals.length} chunks`);
    const spread = arrivals.at(-1)! - arrivals[0];
    assert.ok(spread > 600, `chunks arrived within ${spread.toFixed(0)} ms: buffered`);

    // WebSockets: chat and voice upgrade through the proxy; a chat completes.
    for (const path of ["/v1/ws", "/v1/voice/ws"]) {
      const socket = new WebSocket(`ws://127.0.0.1:${port}${path}`, [
        "convergio.v1",
        `bearer.${token}`,
      ]);
      const frames: Array<Record<string, unknown>> = [];
      socket.onmessage = (e) => frames.push(JSON.parse(e.data));
      const opened = await new Promise<boolean>((resolve) => {
        socket.onopen = () => resolve(true);
        socket.onerror = () => resolve(false);
      });
      assert.ok(opened, `${path} upgraded through nginx`);
      if (path === "/v1/ws") {
        socket.send(JSON.stringify({ type: "chat.start", request_id: "r1", prompt: "hi" }));
        for (let i = 0; !frames.some((f) => f.type === "chat.complete"); i++) {
          assert.ok(i < 100, `no chat.complete: ${JSON.stringify(frames)}`);
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      const closed = new Promise((r) => socket.addEventListener("close", r, { once: true }));
      socket.close();
      await closed;
    }

    // Bodies over client_max_body_size stop at nginx.
    const big = await fetch(`${base}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: "x".repeat(2 * 1024 * 1024),
    });
    assert.equal(big.status, 413);
    assert.match(
      big.headers.get("content-type") ?? "",
      /text\/html/,
      "nginx's page, not the gateway's",
    );
    await big.body?.cancel();

    const metrics = await fetch(`${base}/metrics`);
    assert.equal(metrics.status, 200, "allowed from 127.0.0.1");
    await metrics.body?.cancel();
  } finally {
    child.kill("SIGQUIT");
    const { code } = await child.status;
    const stderr = await new Response(child.stderr).text();
    await gw.close();
    await Deno.remove(dir, { recursive: true });
    assert.equal(code, 0, stderr);
  }
});
