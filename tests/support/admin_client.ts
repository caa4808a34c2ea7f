import assert from "node:assert/strict";
import type { TestGateway } from "./gateway.ts";

/** A decoded JSON body: tests read fields freely and assert on them. */
// deno-lint-ignore no-explicit-any
export type Json = any;

/** One HTTP answer, read whole. */
export interface Reply {
  status: number;
  headers: Headers;
  text: string;
  /** The body as JSON, when it is JSON. */
  json: Json;
}

export interface CallOpts {
  token?: string;
  body?: unknown;
  /** Sent as `x-request-id`, so the audit log can be matched to the call. */
  requestId?: string;
}

/** The reason every audited change in these tests gives, unless it names its own. */
export const REASON = "end-to-end test change";

/** Calls the gateway and reads the whole answer. */
export async function call(
  gw: { url: string },
  method: string,
  path: string,
  opts: CallOpts = {},
): Promise<Reply> {
  const headers: Record<string, string> = {};
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  if (opts.body !== undefined) headers["content-type"] = "application/json";
  if (opts.requestId) headers["x-request-id"] = opts.requestId;
  const res = await fetch(`${gw.url}${path}`, {
    method,
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  const text = await res.text();
  const json = res.headers.get("content-type")?.includes("json") ? JSON.parse(text) : undefined;
  return { status: res.status, headers: res.headers, text, json };
}

/** Authenticated JSON calls as one principal. */
export interface Client {
  token: string;
  get(path: string, requestId?: string): Promise<Reply>;
  post(path: string, body?: unknown, requestId?: string): Promise<Reply>;
  put(path: string, body: unknown, requestId?: string): Promise<Reply>;
  del(path: string, requestId?: string): Promise<Reply>;
}

export function clientOf(gw: TestGateway, token: string): Client {
  const send = (method: string, path: string, body?: unknown, requestId?: string) =>
    call(gw, method, path, { token, body, requestId });
  return {
    token,
    get: (path, requestId) => send("GET", path, undefined, requestId),
    post: (path, body = {}, requestId) => send("POST", path, body, requestId),
    put: (path, body, requestId) => send("PUT", path, body, requestId),
    del: (path, requestId) => send("DELETE", path, undefined, requestId),
  };
}

export type Claims = NonNullable<Parameters<TestGateway["token"]>[0]>;

/** A client holding a token with these claims. */
export async function as(gw: TestGateway, claims: Claims): Promise<Client> {
  return clientOf(gw, await gw.token(claims));
}

/** The platform admin every test acts as: user `root` of tenant `ops`. */
export const ROOT = { tenant: "ops", user: "root", roles: ["admin"] } satisfies Claims;

export function admin(gw: TestGateway): Promise<Client> {
  return as(gw, ROOT);
}

/** Asserts an error answer: its status, its code, and the field it names, when given. */
export function assertError(reply: Reply, status: number, code: string, param?: string): void {
  assert.equal(reply.status, status, reply.text);
  assert.equal(reply.json?.error?.code, code, reply.text);
  if (param !== undefined) assert.equal(reply.json.error.param, param, reply.text);
}

/** Asserts a 2xx answer and returns its body. */
export function ok(reply: Reply, status = 200): Json {
  assert.equal(reply.status, status, reply.text);
  return reply.json;
}

/** `?reason=` for DELETE calls. */
export const withReason = (path: string, reason = REASON) =>
  `${path}${path.includes("?") ? "&" : "?"}reason=${encodeURIComponent(reason)}`;

/** A V7 chat (`POST /v1/chat`) with one prompt and any extra fields. */
export function chat(c: Client, extra: Record<string, unknown> = {}, requestId?: string) {
  return c.post("/v1/chat", { prompt: "hello", ...extra }, requestId);
}

/** An OpenAI-shaped function tool of this name, taking a `q` string. */
export const tool = (name: string) => ({
  type: "function" as const,
  function: {
    name,
    description: `the ${name} tool`,
    parameters: { type: "object", properties: { q: { type: "string" } } },
  },
});

/**
 * The audit log as `c` sees it, newest first. Edge entries (tool denials) go
 * to the aggregator with the next control poll, which this runs first.
 */
export async function audit(
  gw: TestGateway,
  c: Client,
  query: Record<string, string> = {},
): Promise<Json[]> {
  await gw.runtime.controlSync!.refresh();
  const qs = new URLSearchParams({ limit: "1000", ...query });
  return ok(await c.get(`/admin/audit?${qs}`)).entries;
}

export interface LedgerRow {
  request_id: string;
  tenant_id: string;
  success: boolean;
  error_code: string | null;
  tool_calls_count: number;
  cost_usd: number;
  provider: string | null;
}

/** Usage events in the ledger by request id, once the edge's batcher has delivered them all. */
export async function ledger(gw: TestGateway): Promise<Map<string, LedgerRow>> {
  await gw.runtime.batcher!.drain();
  const rows = await gw.deps.aggregator!.sql<LedgerRow[]>`
    SELECT request_id, tenant_id, success, error_code, tool_calls_count, cost_usd::float8,
      provider
    FROM usage_events`;
  return new Map(rows.map((r) => [r.request_id, r]));
}
