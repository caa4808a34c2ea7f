import assert from "node:assert/strict";
import { TenantLabels } from "../../src/obs/tenant_labels.ts";
import { createMetrics } from "../../src/obs/metrics.ts";

Deno.test("the top N tenants by today's spend get labels, the rest are other", () => {
  let now = Date.UTC(2026, 10, 26, 10);
  const labels = new TenantLabels(2, () => now);
  assert.equal(labels.label("a", 1).label, "a");
  assert.equal(labels.label("b", 2).label, "b");
  assert.equal(labels.label("c", 0.5).label, "other", "c spends less than both");
  const big = labels.label("d", 5);
  assert.equal(big.label, "d", "d outspends the smallest labelled tenant");
  assert.deepEqual(big.dropped, ["a"]);
  assert.equal(labels.label("a", 0).label, "other");
  now += 86_400_000;
  const fresh = labels.label("c", 0.1);
  assert.equal(fresh.label, "c", "a new day starts from zero");
  assert.deepEqual(fresh.dropped.sort(), ["b", "d"]);
});

Deno.test("metric series stay bounded however many tenants spend", async () => {
  let now = Date.UTC(2026, 10, 26);
  const metrics = createMetrics({ tenantLabelTopN: 3, now: () => now });
  for (let i = 0; i < 500; i++) {
    metrics.tenantCost.inc({ tenant: metrics.tenantLabel(`t${i}`, 0.01), lane: "managed" }, 0.01);
  }
  const series = (await metrics.registry.getSingleMetric("convergio_tenant_cost_usd_total")!.get())
    .values;
  assert.equal(series.length, 4, "three tenants plus other");
  const total = series.reduce((s, v) => s + v.value, 0);
  assert.ok(Math.abs(total - 5) < 1e-9, "no spend is lost to the bound");
  now += 86_400_000;
  metrics.tenantLabel("new", 1);
  const after = (await metrics.registry.getSingleMetric("convergio_tenant_cost_usd_total")!.get())
    .values;
  assert.deepEqual(after.map((v) => v.labels.tenant), ["other"], "yesterday's tenants are dropped");
});

Deno.test("with observability off, metrics record nothing and the registry is empty", async () => {
  const metrics = createMetrics({ enabled: false });
  metrics.httpRequests.inc({ route: "/v1/chat", method: "POST", status_class: "2xx" });
  metrics.httpDuration.observe({ route: "/v1/chat", streaming: "false" }, 0.1);
  metrics.budgetFraction.set({ tenant: "t" }, 0.5);
  assert.equal((await metrics.registry.metrics()).trim(), "");
});

Deno.test("OBSERVABILITY=off reaches the running gateway: no request metrics are recorded", async () => {
  const { startGateway, testConfig } = await import("../support/gateway.ts");
  const gw = await startGateway(testConfig({ observability: { enabled: false } }));
  try {
    const res = await fetch(`${gw.url}/v1/chat`, {
      method: "POST",
      headers: { authorization: `Bearer ${await gw.token()}` },
      body: JSON.stringify({ prompt: "hi" }),
    });
    assert.equal(res.status, 200);
    await res.body?.cancel();
    assert.doesNotMatch(
      await (await fetch(`${gw.url}/metrics`)).text(),
      /convergio_http_requests_total\{/,
    );
  } finally {
    await gw.close();
  }
});
