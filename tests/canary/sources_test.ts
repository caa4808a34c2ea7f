import assert from "node:assert/strict";
import {
  combine,
  metricsSource,
  parsePrometheus,
  sampleFromMetrics,
  sampleFromSlo,
  sloSource,
  SourceError,
} from "../../src/canary/sources.ts";
import type { Sample } from "../../src/canary/signals.ts";
import { startGateway, testConfig } from "../support/gateway.ts";

const METRICS = `# HELP convergio_http_requests_total Requests.
# TYPE convergio_http_requests_total counter
convergio_http_requests_total{route="/v1/chat",method="POST",status_class="2xx"} 90
convergio_http_requests_total{route="/v1/chat",method="POST",status_class="5xx"} 6
convergio_http_requests_total{route="/v1/chat/completions",method="POST",status_class="4xx"} 4
convergio_http_requests_total{route="/healthz",method="GET",status_class="5xx"} 50
convergio_http_request_duration_seconds_bucket{le="0.1",route="/v1/chat",streaming="false"} 40
convergio_http_request_duration_seconds_bucket{le="0.8",route="/v1/chat",streaming="false"} 80
convergio_http_request_duration_seconds_bucket{le="1",route="/v1/chat",streaming="false"} 90
convergio_http_request_duration_seconds_bucket{le="+Inf",route="/v1/chat",streaming="false"} 96
convergio_http_request_duration_seconds_bucket{le="0.1",route="/v1/chat/completions",streaming="false"} 4
convergio_http_request_duration_seconds_bucket{le="0.8",route="/v1/chat/completions",streaming="false"} 4
convergio_http_request_duration_seconds_bucket{le="1",route="/v1/chat/completions",streaming="false"} 4
convergio_http_request_duration_seconds_bucket{le="+Inf",route="/v1/chat/completions",streaming="false"} 4
convergio_http_request_duration_seconds_bucket{le="+Inf",route="/v1/chat",streaming="true"} 1000
convergio_http_request_duration_seconds_bucket{le="+Inf",route="/v1/models",streaming="false"} 1000
`;

Deno.test("parsePrometheus reads names, labels (escaped too) and values", () => {
  const s = parsePrometheus(
    `# comment\n\nup 1\nx{a="b\\"c",d="e\\\\f",n="l\\n2"} +Inf\ny{} -Inf\nz{a="1"} 2.5e3 1700000000\n???\n`,
  );
  assert.deepEqual(s, [
    { name: "up", labels: {}, value: 1 },
    { name: "x", labels: { a: 'b"c', d: "e\\f", n: "l\n2" }, value: Infinity },
    { name: "y", labels: {}, value: -Infinity },
    { name: "z", labels: { a: "1" }, value: 2500 },
  ]);
});

Deno.test("/metrics: /v1/ requests and 5xx, non-streamed chat latency as the recording rules pick them", () => {
  const s = sampleFromMetrics(METRICS, 42, 800);
  assert.equal(s.at, 42);
  assert.equal(s.requests, 100, "/healthz is not API traffic");
  assert.equal(s.errors, 6);
  assert.equal(s.chat, 100, "streams and /v1/models are not non-streamed chat");
  assert.equal(s.slow, 16, "exact at the 800 ms bucket bound");
  assert.equal(s.slowOverMs, 800);
  assert.deepEqual(s.buckets, [[100, 44], [800, 84], [1000, 94], [Infinity, 100]]);
  assert.equal(sampleFromMetrics(METRICS, 0, 900).slow, 11, "between bounds: linear");
  const noChat = sampleFromMetrics(
    `convergio_http_requests_total{route="/v1/models",method="GET",status_class="2xx"} 3\n`,
    0,
    800,
  );
  assert.deepEqual([noChat.requests, noChat.chat, noChat.slow], [3, 0, 0]);
  assert.deepEqual(noChat.buckets, [[Infinity, 0]]);
  assert.throws(() => sampleFromMetrics("up 1\n", 0, 800), SourceError);
});

Deno.test("/admin/slo: the whole SLO window's counts are the cumulative counters", () => {
  const body = {
    targets: { latency_ms: 800, window_days: 30 },
    slos: [
      {
        name: "availability",
        windows: { "5m": { total: 1, bad: 0 }, "30d": { total: 50, bad: 5 } },
      },
      { name: "latency", windows: { "30d": { total: 45, bad: 3 } } },
    ],
  };
  assert.deepEqual(sampleFromSlo(body, 7), {
    at: 7,
    requests: 50,
    errors: 5,
    chat: 45,
    slow: 3,
    slowOverMs: 800,
  });
  assert.throws(() => sampleFromSlo({}, 0), /without targets and slos/);
  assert.throws(() => sampleFromSlo(null, 0), SourceError);
  assert.throws(
    () => sampleFromSlo({ ...body, slos: body.slos.slice(0, 1) }, 0),
    /no 30d window for the latency SLO/,
  );
});

Deno.test("combine sums several gateways, histograms included; one failure fails the sample", async () => {
  const a: Sample = {
    at: 1,
    requests: 10,
    errors: 1,
    chat: 8,
    slow: 1,
    slowOverMs: 800,
    buckets: [[800, 7], [Infinity, 8]],
  };
  const b: Sample = {
    ...a,
    requests: 5,
    errors: 0,
    chat: 4,
    slow: 0,
    buckets: [[800, 4], [Infinity, 4]],
  };
  const sum = await combine([() => Promise.resolve(a), () => Promise.resolve(b)])(9);
  assert.deepEqual(sum, {
    at: 9,
    requests: 15,
    errors: 1,
    chat: 12,
    slow: 1,
    slowOverMs: 800,
    buckets: [[800, 11], [Infinity, 12]],
  });
  const noBuckets = await combine([
    () => Promise.resolve(a),
    () => Promise.resolve({ ...b, buckets: undefined }),
  ])(9);
  assert.equal(noBuckets.buckets, undefined);
  const one = () => Promise.resolve(a);
  assert.equal(combine([one]), one);
  await assert.rejects(combine([one, () => Promise.reject(new SourceError("down"))])(0), /down/);
});

Deno.test("both sources read a real gateway's counters: 5xx and slow requests included", async () => {
  const gw = await startGateway(testConfig({
    providers: {
      demo: { protocol: "mock", first_token_ms: 30 },
      broken: { protocol: "mock", fail: "unavailable" },
    },
    models: {
      "convergio-demo": {
        deployments: [{ provider: "demo", model: "demo-large" }],
        price: { input_per_1m: 2, output_per_1m: 8 },
      },
      "broken-model": {
        deployments: [{ provider: "broken", model: "x" }],
        price: { input_per_1m: 2, output_per_1m: 8 },
      },
    },
    routing: { backoff_ms: 0 },
    observability: { slo: { latency_ms: 20 } },
  }));
  try {
    const user = await gw.token();
    const admin = await gw.token({ roles: ["admin"] });
    const send = async (model: string) => {
      const res = await fetch(`${gw.url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${user}`, "content-type": "application/json" },
        body: JSON.stringify({ model, messages: [{ role: "user", content: "hi" }] }),
      });
      await res.body?.cancel();
      return res.status;
    };
    const statuses = [];
    for (let i = 0; i < 6; i++) statuses.push(await send("convergio-demo"));
    for (let i = 0; i < 4; i++) statuses.push(await send("broken-model"));
    assert.deepEqual(statuses.slice(0, 6), [200, 200, 200, 200, 200, 200]);
    assert.ok(statuses.slice(6).every((s) => s >= 500), statuses.join());

    const slo = await sloSource(gw.url, admin)(1);
    assert.deepEqual(slo, { at: 1, requests: 10, errors: 4, chat: 6, slow: 6, slowOverMs: 20 });
    // /metrics counts failed chats in the latency histogram too (as the RB-2 recording rule does).
    const m = await metricsSource(gw.url, 25)(2);
    assert.deepEqual([m.requests, m.errors, m.chat], [10, 4, 10]);
    assert.ok(m.slow >= 6 && m.slow <= 10, `slow ${m.slow}`);

    await assert.rejects(sloSource(gw.url, user)(0), /GET .*\/admin\/slo: HTTP 403/);
    await assert.rejects(sloSource("http://127.0.0.1:9", admin, fetch, 2_000)(0), SourceError);
    const html = () => Promise.resolve(new Response("<html>"));
    await assert.rejects(sloSource(gw.url, admin, html)(0), /not JSON/);
    await assert.rejects(metricsSource(`${gw.url}/nope`, 800)(0), /HTTP 404/);
  } finally {
    await gw.close();
  }
});
