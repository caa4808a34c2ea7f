/**
 * The console in Debian's Chromium (playwright-core), against a full gateway
 * on real Postgres that has served real traffic: every view shows the same
 * figures as its API, the canary promote goes through the UI into the audit
 * log, a tenant admin reaches nothing of another tenant, and the pages pass
 * the accessibility basics. Each view is saved under docs/screenshots/.
 */
import assert from "node:assert/strict";
import type { Browser, Page } from "playwright-core";
import { count, ms, usd } from "../../src/console/format.ts";
import { type Json, ok } from "../support/admin_client.ts";
import {
  assertAccessible,
  chartsDrawn,
  launch,
  openTab,
  screenshot,
  signIn,
  tableRows,
  tabTo,
} from "./_browser.ts";
import { ACME, type ConsoleFixture, GLOBEX, withConsoleGateway } from "./_fixture.ts";

const h1 = (page: Page) => page.locator("h1").textContent();

/** Loads a console page, checks it is the one asked for, accessible, and saved when named. */
async function view(page: Page, url: string, title: string, shot?: string) {
  const res = await page.goto(url);
  assert.equal(res?.status(), 200, `${url}: ${await page.locator("main").textContent()}`);
  assert.equal(await h1(page), title);
  await assertAccessible(page);
  if (shot) await screenshot(page, shot);
}

async function operatorViews(browser: Browser, f: ConsoleFixture) {
  const { gw, root } = f;
  const tab = await openTab(browser);
  const { page } = tab;
  await signIn(page, gw.url, { apiKey: f.operatorKey });
  assert.equal(new URL(page.url()).pathname, "/console/slo");

  await view(page, `${gw.url}/console/slo`, "SLO status", "slo");
  const slo = ok(await root.get("/admin/slo")).slos as Json[];
  for (const s of slo) {
    const section = page.locator(`section[data-slo="${s.name}"]`);
    const firstWindow = (await section.locator("tbody tr").first().locator("td").first()
      .textContent())!;
    assert.equal(firstWindow, count(s.windows["5m"].total), s.name);
    const met = Object.values(s.windows as Record<string, Json>)
      .every((w) => w.sli === null || w.sli >= s.target);
    assert.equal(await section.locator("h2 .badge").textContent(), met ? "met" : "missed");
  }
  // The broken provider's 503s spend the availability budget.
  assert.equal(
    await page.locator('section[data-slo="availability"] h2 .badge').textContent(),
    "missed",
  );

  await view(page, `${gw.url}/console/latency`, "Latency");
  await chartsDrawn(page, 2);
  await screenshot(page, "latency");
  const latency = ok(await root.get("/admin/stats/latency?hours=24")).series as Json[];
  const rows = await tableRows(page, "#latency-table");
  assert.equal(rows.length, latency.length);
  assert.ok(latency.length >= 3, "traffic spread over several hours");
  assert.deepEqual(
    rows.map((r) => r.slice(1)),
    latency.map((l) => [l.p50_ms, l.p95_ms, l.p99_ms].map(ms)),
  );
  const ttft = await tableRows(page, "#ttft-table");
  assert.deepEqual(ttft.map((r) => r[1]), latency.map((l) => ms(l.ttft_p50_ms)));
  assert.ok(latency.some((l) => l.ttft_p50_ms > 0), "streams have a first token");

  await view(page, `${gw.url}/console/errors`, "Errors and providers", "errors");
  const errors = ok(await root.get("/admin/stats/errors?hours=24")).errors as Json[];
  assert.deepEqual(
    await tableRows(page, "#errors-table"),
    errors.map((e) => [e.error_code, e.provider ?? "–", count(e.count)]),
  );
  assert.ok(errors.some((e) => e.error_code === "provider.unavailable" && e.count === 6));
  const providers = ok(await root.get("/admin/providers")).deployments as Json[];
  const shown = await tableRows(page, "#providers-table");
  assert.deepEqual(
    shown.map((r) => [r[0], r[2], r[3], r[5], r[6]]),
    providers.map((d) => [
      `${d.provider}/${d.deployment}`,
      count(d.attempts),
      count(d.errors),
      count(d.failovers),
      d.breaker,
    ]),
  );
  assert.equal(providers.find((d) => d.provider === "down").breaker, "open");
  assert.ok(providers.find((d) => d.provider === "flaky").failovers > 0);

  await view(page, `${gw.url}/console/spend`, "Spend");
  await chartsDrawn(page, 2);
  await screenshot(page, "spend");
  const spend = ok(await root.get("/admin/stats/spend?days=30"));
  const days = [...new Set((spend.tenants as Json[]).map((r) => r.day))].sort();
  assert.ok(days.length >= 4, "four UTC days of spend");
  const perTenant = await tableRows(page, "#spend-tenants-table");
  assert.deepEqual(perTenant.map((r) => r[0]), days);
  const header = await page.locator("#spend-tenants-table thead th").allTextContents();
  const acmeColumn = header.indexOf(ACME);
  for (const [i, d] of days.entries()) {
    const row = (spend.tenants as Json[]).find((r) => r.day === d && r.key === ACME);
    assert.equal(perTenant[i][acmeColumn], usd(row?.cost_usd ?? 0));
    assert.equal(perTenant[i].at(-1), usd(spend.global_daily_cap_usd));
  }
  const models = await page.locator("#spend-models-table thead th").allTextContents();
  assert.deepEqual(
    models.slice(1, -1),
    [...new Set((spend.models as Json[]).map((r) => r.key))].sort(),
  );

  await view(page, `${gw.url}/console/budgets`, "Budgets", "budgets");
  const budgets = ok(await root.get("/admin/stats/budgets")).tenants as Json[];
  for (const b of budgets) {
    const row = page.locator(`#budgets-table tr[data-tenant="${b.tenant_id}"]`);
    assert.equal(await row.locator(".badge").textContent(), b.state === "none" ? "ok" : b.state);
  }
  assert.ok(
    ["alert", "downgrade", "block"].includes(budgets.find((b) => b.tenant_id === GLOBEX).state),
  );

  await view(page, `${gw.url}/console/mitigations`, "Mitigations", "mitigations");
  const pushToTalk = page.locator('tr[data-mitigation="push_to_talk"]');
  assert.equal(await pushToTalk.getAttribute("data-active"), "true");
  assert.match((await pushToTalk.textContent())!, /root.*RB-4: dropouts in eu-west/);
  const avoid = page.locator('tr[data-mitigation="avoid_provider"]');
  assert.match((await avoid.textContent())!, /autopilot on edge [0-9a-f]{8}.*"provider":"flaky"/);
  const autopilot = await tableRows(page, "#autopilot-table");
  assert.ok(autopilot.some((r) => r[2] === "autopilot" && r[3] === "mitigation.apply"));

  await tab.close();
}

/** Promote through the UI: keyboard reaches the form, the redirect reports it, the API and audit log agree. */
async function promoteCanary(browser: Browser, f: ConsoleFixture) {
  const { gw, root } = f;
  const tab = await openTab(browser);
  const { page } = tab;
  await signIn(page, gw.url, { apiKey: f.operatorKey });
  await view(page, `${gw.url}/console/flags`, "Flags");
  const row = page.locator('tr[data-flag="routing_policy"]');
  assert.equal(
    await row.locator('[data-field="canary"]').textContent(),
    '25 % of tenants get "cheapest"',
  );

  await tabTo(page, "#reason-routing_policy");
  await page.keyboard.type("canary clean in the browser test");
  await page.keyboard.press("Tab");
  assert.equal(await page.locator(":focus").textContent(), "Promote canary");
  await Promise.all([page.waitForURL(/done=promote/), page.keyboard.press("Enter")]);
  assert.match((await page.locator('[role="status"]').textContent())!, /routing_policy promoted/);
  assert.equal(await row.locator('[data-field="canary"]').textContent(), "none");
  await assertAccessible(page);
  await screenshot(page, "flags");
  const state = ok(await root.get("/admin/flags")).flags.routing_policy;
  assert.equal(state.default, "cheapest");
  assert.equal(state.canary, null);

  await view(page, `${gw.url}/console/audit`, "Audit log", "audit");
  assert.match((await page.locator('[role="status"]').textContent())!, /Hash chain verified/);
  const newest = ok(await root.get("/admin/audit?limit=1")).entries[0];
  assert.equal(newest.action, "flag.canary.promote");
  const [first] = await tableRows(page, "#audit-table");
  assert.deepEqual(first.slice(0, 1).concat(first.slice(2, 6)), [
    String(newest.id),
    "root (ops)",
    "flag.canary.promote",
    "flag:routing_policy",
    "canary clean in the browser test",
  ]);
  await tab.close();
}

async function tenantAdmin(browser: Browser, f: ConsoleFixture) {
  const { gw } = f;
  const token = await f.acmeAdminToken();
  const tab = await openTab(browser);
  const { page } = tab;
  await signIn(page, gw.url, { token });
  assert.equal(new URL(page.url()).pathname, "/console/tenant");
  await view(page, `${gw.url}/console/tenant`, `Usage of ${ACME}`, "tenant");
  assert.deepEqual(await page.locator("nav.side a").allTextContents(), [`Usage of ${ACME}`]);

  const api = (path: string) =>
    fetch(`${gw.url}${path}`, { headers: { authorization: `Bearer ${token}` } }).then((r) =>
      r.json()
    );
  const current = await api("/v1/usage/current");
  for (const [card, totals] of [["usage-day", current.day], ["usage-month", current.month]]) {
    const field = (name: string) =>
      page.locator(`[data-usage="${card}"] [data-field="${name}"]`).textContent();
    assert.equal(await field("requests"), count(totals.requests));
    assert.equal(await field("tool_calls"), count(totals.tool_calls));
    assert.equal(await field("cost_usd"), usd(totals.cost_usd));
    assert.ok(totals.tool_calls > 0 && totals.requests > 0);
  }
  const users = (await api("/v1/usage/users?period=month")).users as Json[];
  await page.getByRole("link", { name: "This month" }).click();
  await page.waitForURL(/period=month/);
  assert.deepEqual(
    await tableRows(page, "#users-table"),
    users.map((
      u,
    ) => [
      u.user_id,
      count(u.requests),
      count(u.input_tokens),
      count(u.output_tokens),
      count(u.tool_calls),
      `${u.audio_seconds.toFixed(1)} s`,
      usd(u.cost_usd),
    ]),
  );
  assert.deepEqual(users.map((u) => u.user_id).sort(), ["ann", "bob", "cat"]);

  await page.goto(`${gw.url}/console/tenant`);
  await tabTo(page, "form[action$='billing.csv'] button");
  const [billing] = await Promise.all([
    page.waitForEvent("download"),
    page.keyboard.press("Enter"),
  ]);
  const month = new Date().toISOString().slice(0, 7);
  assert.equal(billing.suggestedFilename(), `billing-${ACME}-${month}.csv`);
  const csv = await Deno.readTextFile((await billing.path())!);
  assert.match(csv, /^tenant_id,day,model,lane,requests/);
  const dayLines = csv.split("\n").slice(1, -2);
  assert.ok(dayLines.length > 0 && dayLines.every((line) => line.startsWith(`${ACME},`)), csv);

  await page.getByLabel("GDPR export format").selectOption("jsonl");
  const [gdpr] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Download GDPR export" }).click(),
  ]);
  assert.equal(gdpr.suggestedFilename(), `usage-${ACME}.jsonl`);
  const events = (await Deno.readTextFile((await gdpr.path())!)).trim().split("\n").map((l) =>
    JSON.parse(l)
  );
  assert.ok(events.length > 20 && events.every((e) => e.tenant_id === ACME));

  // URL manipulation: every way to another tenant, or to operator pages, is the API's 403.
  for (
    const path of [
      "/console/slo",
      "/console/spend",
      "/console/budgets",
      "/console/flags",
      "/console/audit",
      `/console/download/billing.csv?month=${month}&tenant=${GLOBEX}`,
      `/console/download/export?format=csv&tenant=${GLOBEX}`,
      `/console/tenant?tenant=${GLOBEX}`,
    ]
  ) {
    const res = await page.goto(`${gw.url}${path}`);
    assert.equal(res?.status(), 403, path);
    assert.equal(await h1(page), "Access denied", path);
    assert.doesNotMatch(await page.content(), new RegExp(`data-user="gus"`));
  }
  await assertAccessible(page);
  await screenshot(page, "denied");
  const promote = await page.evaluate(async () => {
    const res = await fetch("/console/actions/flags/voice_mode/rollback", {
      method: "POST",
      body: new URLSearchParams({ reason: "tenant admin tries" }),
    });
    return { status: res.status, text: await res.text() };
  });
  assert.equal(promote.status, 403);
  assert.match(promote.text, /this needs one of the roles: admin/);
  assert.ok(
    ok(await f.root.get("/admin/flags")).flags.voice_mode.canary,
    "the canary is untouched",
  );

  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL(/\/console\/login$/);
  await page.goto(`${gw.url}/console/tenant`);
  assert.match(page.url(), /\/console\/login\?next=%2Fconsole%2Ftenant$/);
  await tab.close();
}

/** The other tenant's admin, by API key: its own users and budget state only. */
async function otherTenant(browser: Browser, f: ConsoleFixture) {
  const tab = await openTab(browser);
  const { page } = tab;
  await signIn(page, f.gw.url, { apiKey: f.globexAdminKey });
  assert.equal(await h1(page), `Usage of ${GLOBEX}`);
  assert.deepEqual((await tableRows(page, "#users-table")).map((r) => r[0]), ["gus"]);
  const state = await page.locator('[data-usage="usage-day"] .badge').textContent();
  assert.ok(["alert", "downgrade", "block"].includes(state!), state!);
  await tab.close();
}

async function loginPage(browser: Browser, f: ConsoleFixture) {
  const tab = await openTab(browser);
  const { page } = tab;
  await page.goto(`${f.gw.url}/console/login`);
  await assertAccessible(page);
  assert.equal(await tabTo(page, "a.skip-link"), 1);
  await tabTo(page, "#api-key");
  await page.keyboard.type("cvg_not-a-real-key");
  await tabTo(page, 'button[type="submit"]');
  await Promise.all([page.waitForLoadState(), page.keyboard.press("Enter")]);
  await page.waitForSelector('[role="alert"]');
  assert.match((await page.locator('[role="alert"]').textContent())!, /unknown or revoked/);
  await screenshot(page, "login");
  await tab.close();
}

Deno.test("console: operator and tenant views in Chromium, on real traffic", async (t) => {
  await withConsoleGateway(async (f) => {
    const browser = await launch();
    try {
      await t.step("sign-in page: labels, keyboard, a refused key", () => loginPage(browser, f));
      await t.step("operator views show the API's figures", () => operatorViews(browser, f));
      await t.step(
        "promoting a canary in the UI lands in the audit log",
        () => promoteCanary(browser, f),
      );
      await t.step("a tenant admin sees its tenant only", () => tenantAdmin(browser, f));
      await t.step("another tenant's admin sees its own", () => otherTenant(browser, f));
    } finally {
      await browser.close();
    }
  });
});
