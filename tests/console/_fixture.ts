import assert from "node:assert/strict";
import { freshPostgres } from "../support/db.ts";
import { startGateway, testConfig, type TestGateway } from "../support/gateway.ts";
import { admin, type Client, ok, tool } from "../support/admin_client.ts";

/**
 * Real time shifted by an offset that only grows: requests are real and take
 * real time, but they can be spread over the past days so the charts have
 * days and hours to show.
 */
export class OffsetClock {
  #offset: number;
  constructor(hoursAgo: number) {
    this.#offset = -hoursAgo * 3_600_000;
  }
  now = () => Date.now() + this.#offset;
  /** Moves "now" to `hours` before the real time; never backwards. */
  at(hoursAgo: number) {
    const offset = -hoursAgo * 3_600_000;
    assert.ok(offset >= this.#offset, "the clock only moves forward");
    this.#offset = offset;
  }
}

export const ACME = "acme";
export const GLOBEX = "globex";
export const GLOBEX_DAILY_BUDGET = 0.6;
export const GLOBAL_CAP = 5;

/**
 * Three chat aliases: one whose first provider fails every third call (so
 * requests fail over), a fast small one, and one whose only provider is down
 * (5xx errors, an open breaker). Prices high enough for visible dollars.
 */
export const CONFIG = {
  providers: {
    flaky: {
      protocol: "mock",
      first_token_ms: 30,
      inter_token_ms: 3,
      fail: "unavailable",
      fail_every: 3,
    },
    steady: { protocol: "mock", first_token_ms: 45, inter_token_ms: 4 },
    fast: { protocol: "mock", first_token_ms: 12, inter_token_ms: 2 },
    down: { protocol: "mock", fail: "unavailable" },
  },
  models: {
    "convergio-demo": {
      deployments: [
        { provider: "flaky", model: "flaky-large" },
        { provider: "steady", model: "steady-large" },
      ],
      price: { input_per_1m: 1500, output_per_1m: 3000 },
      // The guard reserves the most a request may cost; a small cap keeps that under the budgets.
      max_output_tokens: 64,
    },
    "convergio-mini": {
      deployments: [{ provider: "fast", model: "fast-small" }],
      price: { input_per_1m: 300, output_per_1m: 600 },
      max_output_tokens: 64,
    },
    "convergio-broken": {
      deployments: [{ provider: "down", model: "down-large" }],
      price: { input_per_1m: 100, output_per_1m: 100 },
    },
  },
  routing: { backoff_ms: 0 },
  tenant_defaults: { rpm: 10_000, tpm: 10_000_000, daily_budget_usd: 5, monthly_budget_usd: 100 },
  tenants: { [GLOBEX]: { limits: { daily_budget_usd: GLOBEX_DAILY_BUDGET } } },
  guardrails: { global_daily_cap_usd: GLOBAL_CAP },
  control: {
    autopilot: {
      // Ticked by the test, never by the timer.
      interval_ms: 86_400_000,
      provider_failover: { enabled: true, window_ms: 60_000, min_events: 10 },
    },
  },
};

export interface ConsoleFixture {
  gw: TestGateway;
  clock: OffsetClock;
  root: Client;
  /** An API key of the platform admin (user root of tenant ops). */
  operatorKey: string;
  /** An API key of globex's tenant admin. */
  globexAdminKey: string;
  /** A JWT of acme's tenant admin, minted now. */
  acmeAdminToken(): Promise<string>;
}

/** Hours before now at which traffic is sent: four UTC days, several hours of the last one. */
const SLOTS = [74, 50, 30, 21, 16, 11, 7, 4, 2, 0];
const WORDS = "the quick brown fox jumps over the lazy dog while the gateway meters it".split(" ");
const prompt = (n: number) =>
  Array.from({ length: n }, (_, i) => WORDS[i % WORDS.length]).join(" ");

async function send(
  gw: TestGateway,
  token: string,
  path: string,
  body: unknown,
): Promise<{ status: number; text: string }> {
  const res = await fetch(`${gw.url}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: res.status, text: await res.text() };
}

/** One slot of traffic: acme's three users on both lanes and both APIs, streamed and not. */
async function slot(gw: TestGateway, i: number) {
  const as = (user: string, mode: "managed" | "byok") => gw.token({ tenant: ACME, user, mode });
  const [ann, bob, cat] = await Promise.all([
    as("ann", "managed"),
    as("bob", "managed"),
    as("cat", "byok"),
  ]);
  const replies = await Promise.all([
    send(gw, ann, "/v1/chat", { prompt: prompt(4 + (i * 7) % 30) }),
    send(gw, ann, "/v1/chat", { model_hint: "convergio-demo", prompt: prompt(12 + (i * 5) % 20) }),
    send(gw, bob, "/v1/chat/stream", { model_hint: "convergio-mini", prompt: prompt(6 + i * 3) }),
    send(gw, cat, "/v1/chat/completions", {
      model: "convergio-mini",
      messages: [{ role: "user", content: prompt(8) }],
      tools: [tool("lookup")],
    }),
  ]);
  assert.deepEqual(replies.filter((r) => r.status !== 200), [], `slot ${i}`);
}

/** Globex spends today until its guard reports 85 % of its daily budget used. */
async function pushGlobex(gw: TestGateway) {
  const gus = await gw.token({ tenant: GLOBEX, user: "gus", mode: "managed" });
  const used = async () => {
    await gw.deps.edge!.guard.idle();
    const me = await fetch(`${gw.url}/v1/me`, { headers: { authorization: `Bearer ${gus}` } });
    return (await me.json()).budget.day.fraction as number;
  };
  for (let n = 0; (await used()) < 0.85; n++) {
    assert.ok(n < 50, "globex never reached 85 % of its budget");
    const reply = await send(gw, gus, "/v1/chat", { prompt: prompt(24) });
    assert.equal(reply.status, 200, reply.text);
  }
}

/**
 * A full gateway on a fresh Postgres, with traffic over the last days,
 * failures on a broken provider, two flag canaries, an operator mitigation
 * and an autopilot one. Everything is delivered to the ledger before `fn`.
 */
export async function withConsoleGateway(fn: (f: ConsoleFixture) => Promise<void>) {
  const dataDir = await Deno.makeTempDir({ prefix: "cvg-console-" });
  const pg = await freshPostgres();
  const clock = new OffsetClock(SLOTS[0]);
  let gw: TestGateway | undefined;
  try {
    gw = await startGateway(
      testConfig({
        ...CONFIG,
        role: "all",
        data_dir: dataDir,
        database_url: pg.url,
        metering: { secret: "test-metering-secret", shutdown_flush_ms: 2_000 },
      }),
      { clock },
    );
    for (const [i, hoursAgo] of SLOTS.entries()) {
      clock.at(hoursAgo);
      await slot(gw, i);
      // The autopilot's window starts at its first sample of a provider's counters.
      if (i === 0) await gw.runtime.autopilot!.tick();
    }
    await pushGlobex(gw);
    const broken = await gw.token({ tenant: ACME, user: "ann", mode: "managed" });
    for (let i = 0; i < 6; i++) {
      const reply = await send(gw, broken, "/v1/chat", {
        model_hint: "convergio-broken",
        prompt: "hi",
      });
      assert.equal(reply.status, 503, reply.text);
    }
    const root = await admin(gw);
    for (
      const [flag, percent, value] of [
        ["routing_policy", 25, "cheapest"],
        ["voice_mode", 10, "text-only"],
      ] as const
    ) {
      ok(
        await root.put(`/admin/flags/${flag}/canary`, {
          percent,
          value,
          reason: `canary ${flag}=${value} at ${percent}%`,
        }),
      );
    }
    ok(await root.post("/admin/mitigations/push_to_talk", { reason: "RB-4: dropouts in eu-west" }));
    await gw.runtime.autopilot!.tick();
    const key = async (tenant_id: string, user_id: string, roles: string[]) =>
      ok(await root.post("/admin/api-keys", { tenant_id, user_id, roles, mode: "managed" }), 201)
        .api_key as string;
    const operatorKey = await key("ops", "root", ["admin"]);
    const globexAdminKey = await key(GLOBEX, "gus", ["tenant_admin"]);
    await gw.runtime.batcher!.drain();
    const g = gw;
    await fn({
      gw,
      clock,
      root,
      operatorKey,
      globexAdminKey,
      acmeAdminToken: () =>
        g.token({ tenant: ACME, user: "ann", roles: ["tenant_admin"], mode: "managed" }),
    });
  } finally {
    await gw?.close();
    await pg.drop();
    await Deno.remove(dataDir, { recursive: true });
  }
}
