/**
 * Shared scaffolding of the control-plane end-to-end tests (mitigations,
 * autopilot, read-only mode): HTTP calls, admin levers, audit reads, bounded
 * waits, a clock the test moves, and a full gateway that takes overrides.
 */
import assert from "node:assert/strict";
import type { Clock } from "../../src/clock.ts";
import type { RuntimeOverrides } from "../../src/compose.ts";
import type { AuditRow } from "../../src/control/audit.ts";
import { freshPostgres } from "./db.ts";
import { call, type Reply } from "./admin_client.ts";
import { startGateway, testConfig, type TestGateway } from "./gateway.ts";

export { call, type Reply };

/** Anything with a base URL: a TestGateway, or a process. */
export interface HasUrl {
  url: string;
}

/** The platform admin every test acts as: user `root` of tenant `ops`. */
export const ADMIN_USER = "root";

export function adminToken(gw: TestGateway): Promise<string> {
  return gw.token({ tenant: "ops", user: ADMIN_USER, roles: ["admin"] });
}

/** `POST /admin/mitigations/{name}` with `{params?, reason}` (a body without reason when null). */
export function applyMitigation(
  gw: HasUrl,
  token: string,
  name: string,
  opts: { params?: Record<string, unknown>; reason?: string | null } = {},
): Promise<Reply> {
  const body: Record<string, unknown> = {};
  if (opts.params !== undefined) body.params = opts.params;
  if (opts.reason !== null) body.reason = opts.reason ?? `apply ${name} for the test`;
  return call(gw, "POST", `/admin/mitigations/${name}`, { token, body });
}

/** `DELETE /admin/mitigations/{name}?reason=` (no reason at all when null). */
export function revertMitigation(
  gw: HasUrl,
  token: string,
  name: string,
  reason: string | null = `revert ${name} for the test`,
): Promise<Reply> {
  const q = reason === null ? "" : `?reason=${encodeURIComponent(reason)}`;
  return call(gw, "DELETE", `/admin/mitigations/${name}${q}`, { token });
}

/** Applies and asserts 200; the stored state. */
export async function mustApply(
  gw: HasUrl,
  token: string,
  name: string,
  opts: { params?: Record<string, unknown>; reason?: string } = {},
) {
  const res = await applyMitigation(gw, token, name, opts);
  assert.equal(res.status, 200, `apply ${name}: ${res.text}`);
  assert.equal(res.json.mitigation, name);
  return res.json.state;
}

export async function mustRevert(gw: HasUrl, token: string, name: string, reason?: string) {
  const res = await revertMitigation(gw, token, name, reason);
  assert.equal(res.status, 200, `revert ${name}: ${res.text}`);
  assert.equal(res.json.state, null);
}

/** A mitigation's state from `GET /admin/mitigations`; null when inactive. */
export async function mitigationState(gw: HasUrl, token: string, name: string) {
  const res = await call(gw, "GET", "/admin/mitigations", { token });
  assert.equal(res.status, 200, res.text);
  assert.ok(name in res.json.mitigations, `GET /admin/mitigations lists ${name}`);
  return res.json.mitigations[name].active;
}

/** `GET /admin/audit` with filters; the rows, newest first. */
export async function audit(
  gw: HasUrl,
  token: string,
  query: Record<string, string> = {},
): Promise<AuditRow[]> {
  const res = await call(gw, "GET", `/admin/audit?${new URLSearchParams(query)}`, { token });
  assert.equal(res.status, 200, res.text);
  return res.json.entries;
}

/**
 * The audit log of a mitigation that was applied once and reverted once:
 * exactly those two rows, by the same actor, with their reasons, the apply
 * going from nothing to the state and the revert from that state to nothing.
 */
export async function assertAppliedThenReverted(
  gw: HasUrl,
  token: string,
  name: string,
  expect: {
    actor: string;
    applyReason: string;
    revertReason: string;
    params?: Record<string, unknown>;
  },
): Promise<void> {
  const rows = await audit(gw, token, { target: `mitigation:${name}` });
  assert.deepEqual(
    rows.map((r) => r.action),
    ["mitigation.revert", "mitigation.apply"],
    `audit of ${name}`,
  );
  const [revert, apply] = rows;
  for (const r of rows) assert.equal(r.actor, expect.actor);
  assert.equal(apply.reason, expect.applyReason);
  assert.equal(apply.before, null);
  const state = apply.after as Record<string, unknown>;
  assert.deepEqual(state.params, expect.params ?? {});
  assert.equal(state.actor, expect.actor);
  assert.equal(state.reason, expect.applyReason);
  assert.equal(revert.reason, expect.revertReason);
  assert.deepEqual(revert.before, apply.after);
  assert.equal(revert.after, null);
  assert.ok(revert.id > apply.id);
}

/** A 503 `db.read_only`: retryable, with a retry-after. */
export function assertReadOnly(res: Reply, what: string): void {
  assert.equal(res.status, 503, `${what}: ${res.text}`);
  assert.equal(res.json.error.code, "db.read_only", what);
  assert.equal(res.json.error.retryable, true, what);
  assert.match(res.headers.get("retry-after") ?? "", /^\d+$/, `${what}: retry-after`);
}

/**
 * Read-only, either way it comes (the mitigation or a lost database): a flag
 * write is refused, and flags and tenants are still served from the snapshot.
 */
export async function assertWritesRefusedReadsCached(
  gw: HasUrl,
  admin: string,
  tenants: string[],
): Promise<void> {
  assertReadOnly(
    await call(gw, "PUT", "/admin/flags/voice_mode", {
      token: admin,
      body: { default: "off", reason: "cannot be stored now" },
    }),
    "PUT /admin/flags/voice_mode",
  );
  const flags = await call(gw, "GET", "/admin/flags", { token: admin });
  assert.equal(flags.status, 200, flags.text);
  assert.equal(flags.json.flags.voice_mode.default, "on");
  const listed = await call(gw, "GET", "/admin/tenants", { token: admin });
  assert.equal(listed.status, 200, listed.text);
  assert.deepEqual(listed.json.tenants.map((t: { id: string }) => t.id), tenants);
}

/** `POST /v1/chat` (V7); asserts nothing. */
export function chat(
  gw: HasUrl,
  token: string,
  body: Record<string, unknown> = { prompt: "hello" },
  requestId?: string,
): Promise<Reply> {
  return call(gw, "POST", "/v1/chat", { token, body, requestId });
}

/** A chat that must succeed; what it was served on. */
export async function served(
  gw: HasUrl,
  token: string,
  body: Record<string, unknown> = { prompt: "hello" },
  requestId?: string,
): Promise<{ provider: string; model: string; downgradedFrom: string | null; reply: Reply }> {
  const reply = await chat(gw, token, body, requestId);
  assert.equal(reply.status, 200, reply.text);
  // The client sees the provider in the header and the body alike.
  assert.equal(reply.headers.get("x-convergio-provider"), reply.json.provider);
  return {
    provider: reply.json.provider,
    model: reply.json.model,
    downgradedFrom: reply.headers.get("x-convergio-downgraded-from"),
    reply,
  };
}

/**
 * Polls `check` every `everyMs` until it holds; throws after `timeoutMs`.
 * A bounded wait for something asynchronous, not a timing assertion.
 */
export async function waitUntil(
  check: () => boolean | Promise<boolean>,
  what: string,
  { timeoutMs = 15_000, everyMs = 100 } = {},
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Real time plus an offset the test moves forward: windows pass without waiting. */
export class OffsetClock implements Clock {
  #offset = 0;
  now = (): number => Date.now() + this.#offset;
  advance(ms: number): void {
    this.#offset += ms;
  }
}

/**
 * `withFullGateway`, with runtime overrides (a clock): role all on a fresh
 * database of the real Postgres, removed afterwards with its data folder.
 */
export async function withControlGateway(
  raw: Record<string, unknown>,
  fn: (gw: TestGateway) => Promise<void>,
  overrides: RuntimeOverrides = {},
): Promise<void> {
  const dataDir = await Deno.makeTempDir({ prefix: "cvg-control-" });
  const pg = await freshPostgres();
  let gw: TestGateway | undefined;
  try {
    gw = await startGateway(
      testConfig({
        role: "all",
        data_dir: dataDir,
        database_url: pg.url,
        ...raw,
        metering: {
          secret: "test-metering-secret",
          shutdown_flush_ms: 2_000,
          ...raw.metering as object,
        },
      }),
      overrides,
    );
    await fn(gw);
  } finally {
    await gw?.close();
    await pg.drop();
    await Deno.remove(dataDir, { recursive: true });
  }
}

/** One sample (summed over matching label sets) of the gateway's Prometheus text. */
export async function metric(
  gw: HasUrl,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const text = await (await fetch(`${gw.url}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have: Record<string, string> = {};
    for (const [, k, v] of (m[3] ?? "").matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)) {
      have[k] = v;
    }
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[4]);
  }
  return sum;
}

/**
 * Opens a voice socket over raw TCP, waits for the 101, and drops the
 * connection without a close frame: the server sees an abnormal close (1006),
 * as when a phone loses its network.
 */
export async function dropVoiceSocket(gw: HasUrl, token: string): Promise<void> {
  const port = Number(new URL(gw.url).port);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const request = [
      "GET /v1/voice/ws HTTP/1.1",
      `Host: 127.0.0.1:${port}`,
      "Upgrade: websocket",
      "Connection: Upgrade",
      "Sec-WebSocket-Version: 13",
      `Sec-WebSocket-Key: ${btoa(crypto.randomUUID().slice(0, 16))}`,
      `Authorization: Bearer ${token}`,
      "",
      "",
    ].join("\r\n");
    await conn.write(new TextEncoder().encode(request));
    let head = "";
    const buf = new Uint8Array(4096);
    while (!head.includes("\r\n\r\n")) {
      const n = await conn.read(buf);
      if (n === null) throw new Error(`closed before the upgrade answer: ${head}`);
      head += new TextDecoder().decode(buf.subarray(0, n));
    }
    assert.match(head, /^HTTP\/1\.1 101/, head);
  } finally {
    conn.close();
  }
}
