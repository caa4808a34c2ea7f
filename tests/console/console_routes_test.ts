/**
 * The console over plain HTTP: sign-in and its cookie, the same-origin check
 * on every POST, refusals, sign-out, the locally served assets and the
 * security headers.
 */
import assert from "node:assert/strict";
import { Hono } from "hono";
import uplotJs from "uplot/dist/uPlot.iife.min.js" with { type: "text" };
import type { AppEnv } from "../../src/api/context.ts";
import { consoleRoutes } from "../../src/console/routes.tsx";
import { CSP } from "../../src/console/security.ts";
import { admin, ok, REASON } from "../support/admin_client.ts";
import { type TestGateway, withFullGateway } from "../support/gateway.ts";

interface Sent {
  status: number;
  headers: Headers;
  text: string;
}

async function get(gw: TestGateway, path: string, cookie?: string): Promise<Sent> {
  const res = await fetch(`${gw.url}${path}`, {
    redirect: "manual",
    headers: cookie ? { cookie } : {},
  });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

/** A form POST as a browser sends it: same origin unless told otherwise. */
async function post(
  gw: TestGateway,
  path: string,
  fields: Record<string, string>,
  opts: { cookie?: string; headers?: Record<string, string> } = {},
): Promise<Sent> {
  const res = await fetch(`${gw.url}${path}`, {
    method: "POST",
    redirect: "manual",
    body: new URLSearchParams(fields),
    headers: {
      origin: gw.url,
      ...(opts.cookie ? { cookie: opts.cookie } : {}),
      ...opts.headers,
    },
  });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

const h1 = (html: string) => /<h1>(.*?)<\/h1>/.exec(html)?.[1];

/** Signs in with a pasted token and returns the session cookie as a Cookie header. */
async function session(gw: TestGateway, token: string): Promise<string> {
  const res = await post(gw, "/console/login", { token });
  assert.equal(res.status, 303, res.text);
  return res.headers.get("set-cookie")!.split(";")[0];
}

Deno.test("console: sign-in with an API key or a JWT sets a strict session cookie", async () => {
  await withFullGateway({}, async (gw) => {
    const root = await admin(gw);
    const key = ok(
      await root.post("/admin/api-keys", {
        tenant_id: "acme",
        user_id: "ann",
        roles: ["tenant_admin"],
      }),
      201,
    ).api_key;

    const page = await get(gw, "/console/login");
    assert.equal(page.status, 200);
    assert.equal(h1(page.text), "Sign in");
    assert.match(page.text, /<label for="api-key">API key<\/label>/);

    const byKey = await post(gw, "/console/login", {
      api_key: key,
      next: "/console/tenant?period=month",
    });
    assert.equal(byKey.status, 303, byKey.text);
    assert.equal(byKey.headers.get("location"), "/console/tenant?period=month");
    const cookie = byKey.headers.get("set-cookie")!;
    assert.match(
      cookie,
      /^cvg_console=ey[\w.-]+; Max-Age=(\d+); Path=\/console; HttpOnly; SameSite=Strict$/,
    );
    const maxAge = Number(/Max-Age=(\d+)/.exec(cookie)![1]);
    assert.ok(maxAge > 850 && maxAge <= 900, `the login token's lifetime, ${maxAge}`);
    const tenant = await get(gw, "/console/tenant", cookie.split(";")[0]);
    assert.equal(tenant.status, 200);
    assert.equal(h1(tenant.text), "Usage of acme");

    // Behind a TLS proxy the cookie is Secure, and the https origin is the one that counts.
    const proxied = await post(gw, "/console/login", { token: await gw.token() }, {
      headers: { origin: gw.url.replace("http:", "https:"), "x-forwarded-proto": "https" },
    });
    assert.equal(proxied.status, 303);
    assert.match(proxied.headers.get("set-cookie")!, /; Secure;/);

    const root2 = await session(gw, root.token);
    const start = await get(gw, "/console", root2);
    assert.equal(start.headers.get("location"), "/console/slo");
    assert.equal(
      (await get(gw, "/console", await session(gw, await gw.token({ roles: ["tenant_admin"] }))))
        .headers.get("location"),
      "/console/tenant",
    );
  });
});

Deno.test("console: bad sign-ins are refused on the form, and next never leaves the console", async () => {
  await withFullGateway({}, async (gw) => {
    const cases: Array<[Record<string, string>, number, RegExp]> = [
      [{ api_key: "cvg_unknown" }, 401, /unknown or revoked/],
      [{ token: "not-a-jwt" }, 401, /not valid/],
      [{}, 400, /Enter an API key/],
    ];
    for (const [fields, status, message] of cases) {
      const res = await post(gw, "/console/login", fields);
      assert.equal(res.status, status);
      assert.match(res.text, message);
      assert.equal(res.headers.get("set-cookie"), null);
    }
    const expired = (await gw.deps.tokens.mint({
      user_id: "u1",
      tenant_id: "t1",
      roles: ["admin"],
      mode: "byok",
      ttl_s: -3600,
    })).token;
    assert.equal((await post(gw, "/console/login", { token: expired })).status, 401);

    const token = await gw.token({ roles: ["admin"] });
    for (
      const next of [
        "//evil.example/x",
        "https://evil.example",
        "/consolex",
        "/console/../admin",
        "/console/%2e%2e/admin",
        "/console\\..\\admin",
      ]
    ) {
      const res = await post(gw, "/console/login", { token, next });
      assert.equal(res.headers.get("location"), "/console", next);
    }
    const login = await get(gw, "/console/login?next=%2F%2Fevil.example");
    assert.match(login.text, /name="next" value="\/console"/);
  });
});

Deno.test("console: no session, an expired or revoked one, and sign-out go to the login page", async () => {
  await withFullGateway({}, async (gw) => {
    const bare = await get(gw, "/console/flags?x=1");
    assert.equal(bare.status, 303);
    assert.equal(bare.headers.get("location"), "/console/login?next=%2Fconsole%2Fflags%3Fx%3D1");
    assert.equal((await get(gw, "/console")).headers.get("location"), "/console/login");
    const action = await post(gw, "/console/actions/flags/voice_mode/promote", { reason: REASON });
    assert.equal(action.status, 303);
    assert.equal(
      action.headers.get("location"),
      "/console/login",
      "a POST is not a place to return to",
    );

    const expired = await get(gw, "/console/slo", "cvg_console=eyJhbGciOiJIUzI1NiJ9.e30.x");
    assert.equal(expired.status, 303);
    assert.match(expired.headers.get("set-cookie")!, /^cvg_console=; Max-Age=0; Path=\/console/);

    const token = await gw.token({ roles: ["admin"] });
    const cookie = await session(gw, token);
    assert.equal((await get(gw, "/console/slo", cookie)).status, 200);
    const logout = await fetch(`${gw.url}/v1/auth/logout`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(logout.status, 200, await logout.text());
    assert.equal(
      (await get(gw, "/console/slo", cookie)).status,
      303,
      "a revoked token ends the session",
    );

    const other = await session(gw, await gw.token({ roles: ["admin"] }));
    const out = await post(gw, "/console/logout", {}, { cookie: other });
    assert.equal(out.status, 303);
    assert.equal(out.headers.get("location"), "/console/login");
    assert.match(out.headers.get("set-cookie")!, /^cvg_console=; Max-Age=0; Path=\/console/);
  });
});

Deno.test("console: a POST from another origin is refused before anything runs", async () => {
  await withFullGateway({}, async (gw) => {
    const root = await admin(gw);
    ok(
      await root.put("/admin/flags/routing_policy/canary", {
        percent: 10,
        value: "cheapest",
        reason: REASON,
      }),
    );
    const cookie = await session(gw, root.token);
    const promote = "/console/actions/flags/routing_policy/promote";
    const foreign: Array<Record<string, string>> = [
      { origin: "http://evil.example" },
      { origin: "null" },
      { origin: "", referer: "http://evil.example/page" },
      { origin: "", referer: "not a url" },
      { origin: gw.url.replace("http:", "https:") },
    ];
    for (const headers of foreign) {
      const h = { ...headers };
      if (h.origin === "") delete h.origin;
      const res = await fetch(`${gw.url}${promote}`, {
        method: "POST",
        redirect: "manual",
        body: new URLSearchParams({ reason: REASON }),
        headers: { cookie, ...h },
      });
      assert.equal(res.status, 403, JSON.stringify(headers));
      assert.match(await res.text(), /came from another site/);
    }
    const loginCsrf = await post(gw, "/console/login", { token: root.token }, {
      headers: { origin: "http://evil.example" },
    });
    assert.equal(loginCsrf.status, 403);
    assert.equal(loginCsrf.headers.get("set-cookie"), null);
    assert.ok(ok(await root.get("/admin/flags")).flags.routing_policy.canary, "nothing changed");

    // A same-origin form without Origin is judged by its Referer.
    const res = await fetch(`${gw.url}${promote}`, {
      method: "POST",
      redirect: "manual",
      body: new URLSearchParams({ reason: "promoted from the console" }),
      headers: { cookie, referer: `${gw.url}/console/flags` },
    });
    assert.equal(res.status, 303);
    assert.equal(res.headers.get("location"), "/console/flags?done=promote&flag=routing_policy");
    const [entry] = ok(await root.get("/admin/audit?limit=1")).entries;
    assert.equal(entry.action, "flag.canary.promote");
    assert.equal(entry.reason, "promoted from the console");
    assert.equal(entry.actor, "root");
    assert.equal(entry.request_id, res.headers.get("x-request-id"), "one id for page and change");
  });
});

Deno.test("console: the API's refusals and errors become pages with their status", async () => {
  await withFullGateway({}, async (gw) => {
    const tenantAdmin = await session(
      gw,
      await gw.token({ tenant: "acme", roles: ["tenant_admin"] }),
    );
    for (const path of ["/console/slo", "/console/flags", "/console/tenant?tenant=globex"]) {
      const res = await get(gw, path, tenantAdmin);
      assert.equal(res.status, 403, path);
      assert.equal(h1(res.text), "Access denied");
    }
    const user = await session(gw, await gw.token({ roles: ["user"] }));
    const start = await get(gw, "/console", user);
    assert.equal(start.status, 403);
    assert.match(start.text, /for admins and tenant admins/);

    const root = await session(gw, (await admin(gw)).token);
    const noCanary = await post(gw, "/console/actions/flags/voice_mode/rollback", {
      reason: REASON,
    }, {
      cookie: root,
    });
    assert.equal(noCanary.status, 409);
    assert.match(noCanary.text, /has no canary in progress/);
    const noReason = await post(gw, "/console/actions/flags/voice_mode/promote", {}, {
      cookie: root,
    });
    assert.equal(noReason.status, 400);
    assert.equal(h1(noReason.text), "Request failed");
    const badMonth = await get(gw, "/console/download/billing.csv?month=2026-13", root);
    assert.equal(badMonth.status, 400);
    assert.match(badMonth.text, /YYYY-MM/);
    for (
      const [path, to] of [["/console/", "/console"], ["/console/flags/?x=1", "/console/flags?x=1"]]
    ) {
      const slash = await get(gw, path, root);
      assert.equal(slash.status, 301);
      assert.equal(slash.headers.get("location"), to);
    }
    const missing = await get(gw, "/console/nowhere", root);
    assert.equal(missing.status, 404);
    assert.equal(h1(missing.text), "Not found");
    assert.equal((await get(gw, "/console/audit?before_id=abc&actor=x", root)).status, 200);
    assert.equal(
      (await get(gw, "/console/latency?hours=9999", root)).status,
      200,
      "falls back to 24 h",
    );
  });
});

Deno.test("console: the audit page pages backwards, keeps its filters and shows a broken chain", async () => {
  await withFullGateway({}, async (gw) => {
    const root = await admin(gw);
    for (let i = 0; i < 52; i++) {
      ok(
        await root.put(`/admin/flags/voice_mode/overrides/t${i}`, { value: "off", reason: REASON }),
      );
    }
    ok(await root.post("/admin/mitigations/push_to_talk", { reason: REASON }));
    const cookie = await session(gw, root.token);
    const rows = (html: string) =>
      [...html.matchAll(/<tr data-action="([^"]+)">/g)].map((m) => m[1]);
    const first = await get(gw, "/console/audit?action=flag.override", cookie);
    assert.equal(rows(first.text).length, 50);
    assert.ok(rows(first.text).every((a) => a === "flag.override.set"));
    const older = /<a href="([^"]+)">Older entries<\/a>/.exec(first.text)![1].replaceAll(
      "&amp;",
      "&",
    );
    assert.match(older, /^\/console\/audit\?action=flag.override&before_id=\d+$/);
    const second = await get(gw, older, cookie);
    assert.deepEqual(rows(second.text), ["flag.override.set", "flag.override.set"]);
    assert.doesNotMatch(second.text, /Older entries/);
    assert.match(second.text, /Hash chain verified: all 53 entries check out/);

    await gw.deps.aggregator!.sql.begin(async (tx) => {
      await tx`SET LOCAL session_replication_role = replica`;
      await tx`UPDATE audit_log SET reason = 'nothing to see' WHERE id = 7`;
    });
    const broken = await get(gw, "/console/audit", cookie);
    assert.match(
      broken.text,
      /Hash chain broken at entry #7 \(its content was changed\)\. 6 entries/,
    );
  });
});

Deno.test("console: downloads pass on the API's file, name and checksum", async () => {
  await withFullGateway({}, async (gw) => {
    const ann = await gw.token({ tenant: "acme", user: "ann", mode: "managed" });
    const chat = await fetch(`${gw.url}/v1/chat`, {
      method: "POST",
      headers: { authorization: `Bearer ${ann}`, "content-type": "application/json" },
      body: JSON.stringify({ prompt: "hello" }),
    });
    assert.equal(chat.status, 200, await chat.text());
    await gw.runtime.batcher!.drain();
    const cookie = await session(gw, await gw.token({ tenant: "acme", roles: ["tenant_admin"] }));
    const month = new Date().toISOString().slice(0, 7);
    const csv = await get(gw, `/console/download/billing.csv?month=${month}`, cookie);
    assert.equal(csv.status, 200);
    assert.equal(csv.headers.get("content-type"), "text/csv; charset=utf-8");
    assert.equal(
      csv.headers.get("content-disposition"),
      `attachment; filename="billing-acme-${month}.csv"`,
    );
    assert.match(csv.text, /^tenant_id,day,model,lane/);
    assert.equal(csv.headers.get("content-security-policy"), CSP);

    const jsonl = await get(gw, "/console/download/export?format=jsonl", cookie);
    assert.equal(jsonl.status, 200);
    assert.equal(jsonl.headers.get("content-type"), "application/x-ndjson");
    assert.equal(jsonl.headers.get("x-export-rows"), "1");
    const digest = new Uint8Array(
      await crypto.subtle.digest("SHA-256", new TextEncoder().encode(jsonl.text)),
    );
    assert.equal(
      jsonl.headers.get("x-checksum-sha256"),
      [...digest].map((b) => b.toString(16).padStart(2, "0")).join(""),
    );
    assert.equal(JSON.parse(jsonl.text).user_id, "ann");

    // An operator opens any tenant's page: its users and downloads, scoped by the query.
    const operator = await session(gw, (await admin(gw)).token);
    const page = await get(gw, "/console/tenant?tenant=acme&period=month", operator);
    assert.equal(h1(page.text), "Usage of acme");
    assert.match(page.text, /<tr data-user="ann">/);
    assert.doesNotMatch(
      page.text,
      /data-usage=/,
      "day and month cards are the caller's own tenant's",
    );
    assert.match(page.text, /<input type="hidden" name="tenant" value="acme">/);
    const theirs = await get(
      gw,
      `/console/download/billing.csv?month=${month}&tenant=acme`,
      operator,
    );
    assert.match(theirs.headers.get("content-disposition")!, /billing-acme-/);
  });
});

Deno.test("console: assets are served locally with types, caching and the CSP", async () => {
  await withFullGateway({}, async (gw) => {
    const types: Record<string, string> = {
      "uplot.js": "text/javascript; charset=utf-8",
      "console.js": "text/javascript; charset=utf-8",
      "uplot.css": "text/css; charset=utf-8",
      "console.css": "text/css; charset=utf-8",
    };
    for (const [name, type] of Object.entries(types)) {
      const res = await get(gw, `/console/assets/${name}`);
      assert.equal(res.status, 200, name);
      assert.equal(res.headers.get("content-type"), type);
      assert.equal(res.headers.get("cache-control"), "public, max-age=3600, must-revalidate");
      assert.equal(res.headers.get("x-content-type-options"), "nosniff");
      const etag = res.headers.get("etag")!;
      const again = await fetch(`${gw.url}/console/assets/${name}`, {
        headers: { "if-none-match": etag },
      });
      assert.equal(again.status, 304);
      await again.body?.cancel();
    }
    assert.equal((await get(gw, "/console/assets/uplot.js")).text, uplotJs);
    assert.equal((await get(gw, "/console/assets/../app.ts")).status, 404);
    assert.equal((await get(gw, "/console/assets/toString")).status, 404);

    const page = await get(gw, "/console/login");
    assert.equal(page.headers.get("content-security-policy"), CSP);
    assert.match(CSP, /script-src 'self';/);
    assert.match(CSP, /style-src 'self';/);
    assert.equal(page.headers.get("x-frame-options"), "DENY");
    assert.equal(page.headers.get("cache-control"), "no-store");
    assert.equal(page.headers.get("referrer-policy"), "same-origin");
    assert.doesNotMatch(
      page.text,
      /<script>|<script [^>]*>[^<]|style=/,
      "no inline script or style",
    );
  });
});

Deno.test("console: an aggregator-only process has no provider counters, and says so", async () => {
  await withFullGateway({ role: "aggregator" }, async (gw) => {
    const cookie = await session(gw, await gw.token({ roles: ["admin"] }));
    const res = await get(gw, "/console/errors", cookie);
    assert.equal(res.status, 200, res.text);
    assert.match(res.text, /serves no edge traffic/);
  });
});

Deno.test("console: failures of the in-process API become error pages, and are logged", async () => {
  await withFullGateway({}, async (gw) => {
    const answers: Array<() => Response> = [
      () => new Response("upstream went away", { status: 502 }),
      () => {
        throw new Error("boom");
      },
      () =>
        Response.json({ error: { code: "auth.invalid", message: "token expired" } }, {
          status: 401,
        }),
    ];
    let answer = answers[0];
    const host = new Hono<AppEnv>();
    host.use(async (c, next) => {
      c.set("record", { identify() {} } as unknown as AppEnv["Variables"]["record"]);
      await next();
    });
    host.route(
      "/console",
      consoleRoutes({ ...gw.deps, app: () => ({ fetch: () => answer() }) }),
    );
    const login = () =>
      host.request("http://console.test/console/login", {
        method: "POST",
        body: new URLSearchParams({ api_key: "cvg_x" }),
        headers: { origin: "http://console.test" },
      });
    const bad = await login();
    assert.equal(bad.status, 502);
    assert.match(await bad.text(), /upstream went away/);
    answer = answers[1];
    const broken = await login();
    assert.equal(broken.status, 500);
    assert.match(await broken.text(), /see the gateway log/);
    assert.ok(gw.logs.some((l) => l.msg === "console error" && String(l.error).includes("boom")));

    // The API turning the token down mid-session ends the session.
    answer = answers[2];
    const token = await gw.token({ roles: ["admin"] });
    const expired = await host.request("http://console.test/console/slo", {
      headers: { cookie: `cvg_console=${token}` },
    });
    assert.equal(expired.status, 303);
    assert.equal(expired.headers.get("location"), "/console/login?next=%2Fconsole%2Fslo");
    assert.match(expired.headers.get("set-cookie")!, /^cvg_console=; Max-Age=0/);
  });
});
