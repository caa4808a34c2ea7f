/**
 * A client that hangs up mid-request: the request is recorded as 499 (not a
 * 5xx, so the availability SLO is untouched), no "unhandled error" is logged,
 * and the request still produces its usage event.
 */
import assert from "node:assert/strict";
import { CANCELLED_CODE, CLIENT_CLOSED } from "../../src/errors.ts";
import { waitUntil } from "../support/control_e2e.ts";
import { startGateway, testConfig } from "../support/gateway.ts";

Deno.test("a client that disconnects mid-request is recorded as 499, metered, and not an error", async () => {
  // An OpenAI-wire upstream that takes the request and never answers.
  const reached = Promise.withResolvers<void>();
  const upstream = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    reached.resolve();
    return new Promise<Response>((resolve) =>
      req.signal.addEventListener("abort", () => resolve(new Response(null, { status: 499 })))
    );
  });
  const gw = await startGateway(testConfig({
    providers: {
      up: {
        protocol: "openai",
        base_url: `http://127.0.0.1:${upstream.addr.port}/v1`,
        api_key: "sk-test",
      },
    },
    models: {
      m: {
        deployments: [{ provider: "up", model: "m" }],
        price: { input_per_1m: 1, output_per_1m: 1 },
      },
    },
  }));
  try {
    const token = await gw.token({ tenant: "t1", user: "u1", mode: "managed" });
    const ac = new AbortController();
    const pending = fetch(`${gw.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }] }),
      signal: ac.signal,
    });
    await reached.promise;
    ac.abort();
    await assert.rejects(pending);
    const logged = () => gw.logs.find((l) => l.msg === "request");
    await waitUntil(() => !!logged(), "the abandoned request's log line", { everyMs: 25 });
    const line = logged()!;
    assert.equal(line.status, CLIENT_CLOSED);
    assert.equal(line.error_code, CANCELLED_CODE);
    assert.equal(gw.logs.filter((l) => l.msg === "unhandled error").length, 0);
    assert.equal(gw.events.length, 1, "its usage event is not lost");
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    assert.match(metrics, /convergio_http_requests_total\{[^}]*status_class="4xx"[^}]*\} 1/);
    assert.doesNotMatch(metrics, /convergio_http_requests_total\{[^}]*status_class="5xx"/);
  } finally {
    await gw.close();
    await upstream.shutdown();
  }
});
