import assert from "node:assert/strict";
import { usageEventOf } from "../../src/metering/from_request.ts";
import { UsageEventSchema } from "../../src/metering/usage_event.ts";
import type { FinishedRequest } from "../../src/obs/request_record.ts";

const STARTED = Date.UTC(2024, 2, 10, 12, 0, 0, 250);

function finished(over: Partial<FinishedRequest> = {}): FinishedRequest {
  return {
    request_id: "req-1",
    method: "POST",
    route: "/v1/chat/completions",
    tenant_id: "tenant-a",
    user_id: "user-a",
    mode: "managed",
    session_id: "sess-1",
    provider: "openai",
    model: "gpt-x",
    input_tokens: 12,
    output_tokens: 34,
    tool_calls: 2,
    audio_seconds_in: 1.5,
    audio_seconds_out: 0.5,
    cost_usd: 0.000456,
    status: 200,
    latency_ms: 87.4,
    started_at: STARTED,
    metered: true,
    streaming: false,
    provider_ms: 50,
    ...over,
  };
}

function valid(r: FinishedRequest) {
  const event = usageEventOf(r);
  assert.ok(event, "an event");
  const parsed = UsageEventSchema.safeParse(event);
  assert.ok(parsed.success, parsed.success ? "" : JSON.stringify(parsed.error.issues));
  return event;
}

Deno.test("usageEventOf: unmetered requests produce no event", () => {
  assert.equal(usageEventOf(finished({ metered: false })), undefined);
  assert.equal(usageEventOf(finished({ metered: false, status: 500 })), undefined);
});

Deno.test("usageEventOf: unattributed requests (no tenant, user or mode) produce no event", () => {
  assert.equal(usageEventOf(finished({ tenant_id: undefined })), undefined);
  assert.equal(usageEventOf(finished({ user_id: undefined })), undefined);
  assert.equal(usageEventOf(finished({ mode: undefined })), undefined);
  assert.equal(usageEventOf(finished({ tenant_id: "" })), undefined);
  assert.equal(usageEventOf(finished({ user_id: "" })), undefined);
});

Deno.test("usageEventOf: a successful request maps every field, error_code null", () => {
  const event = valid(finished({ error_code: "ignored_on_success" }));
  assert.deepEqual(event, {
    request_id: "req-1",
    tenant_id: "tenant-a",
    user_id: "user-a",
    session_id: "sess-1",
    provider: "openai",
    model: "gpt-x",
    input_tokens: 12,
    output_tokens: 34,
    tool_calls_count: 2,
    audio_seconds_in: 1.5,
    audio_seconds_out: 0.5,
    latency_ms: 87,
    ttft_ms: null,
    success: true,
    error_code: null,
    mode: "managed",
    lane: "managed",
    cost_usd: 0.000456,
    occurred_at: "2024-03-10T12:00:00.250Z",
  });
  assert.equal(valid(finished({ ttft_ms: 41.6 })).ttft_ms, 42, "a stream's first token, rounded");
  for (const status of [200, 201, 204, 399]) {
    const e = valid(finished({ status }));
    assert.equal(e.success, true, `status ${status}`);
    assert.equal(e.error_code, null);
  }
});

Deno.test("usageEventOf: a failed request carries the record's error code, or internal", () => {
  const limited = valid(finished({ status: 429, error_code: "rate_limited", cost_usd: 0 }));
  assert.equal(limited.success, false);
  assert.equal(limited.error_code, "rate_limited");
  for (const status of [400, 402, 499, 500, 502, 503]) {
    const e = valid(finished({ status, error_code: undefined }));
    assert.equal(e.success, false, `status ${status}`);
    assert.equal(e.error_code, "internal");
  }
});

Deno.test("usageEventOf: optional fields become null, latency a non-negative integer, lane = mode", () => {
  const e = valid(
    finished({
      session_id: undefined,
      provider: undefined,
      model: undefined,
      mode: "byok",
      latency_ms: 12.5,
    }),
  );
  assert.equal(e.session_id, null);
  assert.equal(e.provider, null);
  assert.equal(e.model, null);
  assert.equal(e.mode, "byok");
  assert.equal(e.lane, "byok");
  assert.equal(e.latency_ms, 13);
  assert.equal(valid(finished({ latency_ms: -3 })).latency_ms, 0, "a clock step back is 0");
  assert.equal(valid(finished({ latency_ms: 0.4 })).latency_ms, 0);
});
