import assert from "node:assert/strict";
import { SloEngine, type SloTargets } from "../../src/obs/slo.ts";
import { createMetrics } from "../../src/obs/metrics.ts";
import { startGateway, testConfig } from "../support/gateway.ts";

const targets: SloTargets = {
  availability: 0.995,
  latency: 0.95,
  latency_ms: 800,
  ttft: 0.95,
  ttft_ms: 1500,
  window_days: 30,
  budget_alert_per_day: 0.25,
  alert_min_events: 100,
};
const DAY = 86_400_000;

function engine(start = Date.UTC(2026, 10, 1)) {
  let now = start;
  const slo = new SloEngine(targets, () => now);
  return { slo, advance: (ms: number) => (now += ms) };
}

const ok = { status: 200, latency_ms: 100, api: true, chat: true, streaming: false };
const byName = (slo: SloEngine, name: string) => slo.report().find((r) => r.name === name)!;

Deno.test("SLIs per window count good and bad events by each SLO's rule", () => {
  const { slo } = engine();
  for (let i = 0; i < 90; i++) slo.record(ok);
  for (let i = 0; i < 10; i++) slo.record({ ...ok, status: 503 });
  for (let i = 0; i < 5; i++) slo.record({ ...ok, latency_ms: 900 });
  slo.record({ ...ok, streaming: true, latency_ms: 5000, ttft_ms: 2000 });
  slo.record({ ...ok, streaming: true, ttft_ms: 300 });
  slo.record({ status: 200, latency_ms: 1, api: false, chat: false, streaming: false });
  const a = byName(slo, "availability").windows["5m"];
  assert.deepEqual({ total: a.total, bad: a.bad }, { total: 107, bad: 10 });
  assert.equal(a.sli, 1 - 10 / 107);
  const l = byName(slo, "latency").windows["1h"];
  assert.deepEqual(
    { total: l.total, bad: l.bad },
    { total: 95, bad: 5 },
    "5xx and streams excluded",
  );
  const t = byName(slo, "ttft").windows["1d"];
  assert.deepEqual({ total: t.total, bad: t.bad }, { total: 2, bad: 1 });
});

Deno.test("old minutes leave the short windows and the whole window after 30 days", () => {
  const { slo, advance } = engine();
  slo.record({ ...ok, status: 500 });
  advance(10 * 60_000);
  slo.record(ok);
  const r = byName(slo, "availability");
  assert.equal(r.windows["5m"].total, 1);
  assert.equal(r.windows["1h"].total, 2);
  advance(31 * DAY);
  const later = byName(slo, "availability");
  assert.equal(later.windows["30d"].total, 0);
  assert.equal(later.windows["1h"].sli, null, "no data is not 100%");
  assert.equal(later.error_budget.remaining, 1);
});

Deno.test("error budget, burn rate, and the 25%-in-a-day alert", () => {
  const { slo, advance } = engine();
  // 29 quiet days of traffic: 1000 requests a day, all good.
  for (let d = 0; d < 29; d++) {
    for (let i = 0; i < 1000; i++) slo.record(ok);
    advance(DAY);
  }
  let r = byName(slo, "availability");
  assert.equal(r.error_budget.remaining, 1);
  assert.equal(r.alert.firing, false);
  // Day 30: 1000 requests, 30 of them 5xx. Budget: 0.5% of 30,000 = 150; 30 is 20%.
  for (let i = 0; i < 970; i++) slo.record(ok);
  for (let i = 0; i < 30; i++) slo.record({ ...ok, status: 500 });
  r = byName(slo, "availability");
  assert.ok(Math.abs(r.error_budget.allowed_bad_events - 150) < 1e-9);
  assert.ok(Math.abs(r.error_budget.remaining - 0.8) < 1e-9);
  assert.ok(Math.abs(r.error_budget.consumed_last_day - 0.2) < 1e-9);
  assert.equal(r.alert.firing, false, "20% in a day is under the 25% rule");
  assert.ok(Math.abs(r.windows["1d"].burn_rate! - 0.03 / 0.005) < 1e-9);
  for (let i = 0; i < 10; i++) slo.record({ ...ok, status: 500 });
  r = byName(slo, "availability");
  assert.ok(r.error_budget.consumed_last_day >= 0.25);
  assert.equal(r.alert.firing, true);
});

Deno.test("too few events never fire the alert", () => {
  const { slo } = engine();
  for (let i = 0; i < 10; i++) slo.record({ ...ok, status: 500 });
  assert.equal(byName(slo, "availability").alert.firing, false);
});

Deno.test("SLIs are exported as gauges at scrape time", async () => {
  const { slo } = engine();
  const metrics = createMetrics();
  slo.register(metrics.registry);
  for (let i = 0; i < 3; i++) slo.record(ok);
  slo.record({ ...ok, status: 500 });
  const text = await metrics.registry.metrics();
  assert.match(text, /convergio_slo_sli_ratio\{slo="availability",window="5m"\} 0\.75/);
  assert.match(
    text,
    /convergio_slo_burn_rate\{slo="availability",window="1h"\} (50|49\.99999\d*)\n/,
  );
  assert.match(text, /convergio_slo_error_budget_remaining_ratio\{slo="availability"\} 0/);
  assert.match(text, /convergio_slo_budget_alert_firing\{slo="availability"\} 0/);
});

Deno.test("GET /admin/slo: admins see targets and SLOs, others are refused", async () => {
  const gw = await startGateway(testConfig({ observability: { slo: { latency_ms: 500 } } }));
  try {
    const user = await gw.token();
    await (await fetch(`${gw.url}/v1/chat`, {
      method: "POST",
      headers: { authorization: `Bearer ${user}` },
      body: JSON.stringify({ prompt: "hi" }),
    })).body?.cancel();
    const denied = await fetch(`${gw.url}/admin/slo`, {
      headers: { authorization: `Bearer ${user}` },
    });
    assert.equal(denied.status, 403);
    await denied.body?.cancel();
    const admin = await gw.token({ roles: ["admin"] });
    const res = await fetch(`${gw.url}/admin/slo`, {
      headers: { authorization: `Bearer ${admin}` },
    });
    const body = await res.json();
    assert.equal(body.targets.latency_ms, 500);
    assert.deepEqual(body.slos.map((s: { name: string }) => s.name), [
      "availability",
      "latency",
      "ttft",
    ]);
    const latency = body.slos[1];
    assert.equal(latency.windows["5m"].total, 1);
    assert.equal(latency.windows["5m"].sli, 1);
    assert.match(latency.objective, /500 ms/);
  } finally {
    await gw.close();
  }
});
