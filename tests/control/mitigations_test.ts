/**
 * Every runbook mitigation through the real HTTP server: applied with
 * `POST /admin/mitigations/{name}`, its effect seen by a client, reverted with
 * `DELETE`, the effect gone, and both actions in the audit log. Plus the flag
 * levers (rollback, kill switch) and the API's validation.
 */
import assert from "node:assert/strict";
import {
  applyMitigation as leverApply,
  revertMitigation as leverRevert,
} from "../../src/control/levers.ts";
import { MITIGATION_NAMES } from "../../src/control/mitigations.ts";
import type { TestGateway } from "../support/gateway.ts";
import { json, type Received, withUpstream } from "../support/recording_upstream.ts";
import {
  ADMIN_USER,
  adminToken,
  applyMitigation,
  assertAppliedThenReverted,
  assertReadOnly,
  assertWritesRefusedReadsCached,
  audit,
  call,
  chat,
  mitigationState,
  mustApply,
  mustRevert,
  revertMitigation,
  served,
  withControlGateway,
} from "../support/control_e2e.ts";
import { connect, pcmChunks, sendChunks, stopVoice, voiceStart } from "../voice/_voice_support.ts";

const PRICE = { input_per_1m: 2, output_per_1m: 8 };
const VOICE = "voice-test";

/**
 * Two mock providers behind the default alias, the first by priority and the
 * second cheaper per deployment cost; a smaller alias; an alias on an
 * OpenAI-protocol upstream the test records; and a realtime mock for voice.
 */
function rawConfig(upstream = "http://127.0.0.1:9/v1"): Record<string, unknown> {
  return {
    providers: {
      primary: { protocol: "mock" },
      cheap: { protocol: "mock" },
      up: { protocol: "openai", base_url: upstream, api_key: "sk-house-key" },
      rt: { protocol: "realtime_mock" },
    },
    models: {
      "convergio-demo": {
        deployments: [
          {
            provider: "primary",
            model: "primary-large",
            cost: { input_per_1m: 5, output_per_1m: 20 },
          },
          {
            provider: "cheap",
            model: "cheap-large",
            cost: { input_per_1m: 0.5, output_per_1m: 2 },
          },
        ],
        price: PRICE,
      },
      "convergio-mini": {
        deployments: [{ provider: "primary", model: "primary-mini" }],
        price: { input_per_1m: 1, output_per_1m: 1 },
      },
      tooly: { deployments: [{ provider: "up", model: "up-model" }], price: PRICE },
      [VOICE]: {
        deployments: [{ provider: "rt", model: "rt-model" }],
        price: { input_per_1m: 32, output_per_1m: 64 },
      },
    },
    default_model: "convergio-demo",
    voice: { model: VOICE },
    routing: { backoff_ms: 0 },
    tenants: {
      acme: { downgrade_model: "convergio-mini" },
      byokco: { byok_keys: { up: "sk-tenant-key" } },
    },
  };
}

interface Ctx {
  gw: TestGateway;
  admin: string;
}

function withGateway(fn: (ctx: Ctx) => Promise<void>, upstream?: string): Promise<void> {
  return withControlGateway(rawConfig(upstream), async (gw) => {
    await fn({ gw, admin: await adminToken(gw) });
  });
}

/** Applies `name` with `params`, runs `during`, reverts, and checks the audit trail. */
async function applyRevert(
  { gw, admin }: Ctx,
  name: string,
  params: Record<string, unknown> | undefined,
  during: () => Promise<void>,
): Promise<void> {
  const applyReason = `RB drill: ${name} on`;
  const revertReason = `RB drill: ${name} off`;
  assert.equal(await mitigationState(gw, admin, name), null, `${name} starts inactive`);
  const state = await mustApply(gw, admin, name, { params, reason: applyReason });
  assert.deepEqual(state.params, params ?? {});
  assert.equal(state.actor, ADMIN_USER);
  assert.deepEqual(state.sources, [], "an operator's mitigation has no autopilot sources");
  const listed = await mitigationState(gw, admin, name);
  assert.deepEqual(listed, state, "GET /admin/mitigations shows what POST stored");
  await during();
  await mustRevert(gw, admin, name, revertReason);
  assert.equal(await mitigationState(gw, admin, name), null, `${name} ends inactive`);
  await assertAppliedThenReverted(gw, admin, name, {
    actor: ADMIN_USER,
    applyReason,
    revertReason,
    params,
  });
}

Deno.test("force_cheaper_provider: the cheaper deployment serves while it is on", async () => {
  await withGateway(async (ctx) => {
    const user = await ctx.gw.token({ tenant: "acme", mode: "managed" });
    assert.equal((await served(ctx.gw, user)).provider, "primary", "priority order first");
    await applyRevert(ctx, "force_cheaper_provider", undefined, async () => {
      const s = await served(ctx.gw, user, { prompt: "cheap please" }, "fcp-1");
      assert.equal(s.provider, "cheap");
      assert.equal(s.model, "convergio-demo", "the alias stays; only the deployment changes");
      // The ledger records the provider that served it.
      await ctx.gw.runtime.batcher!.drain();
      const [row] = await ctx.gw.runtime.db!.sql<{ provider: string }[]>`
        SELECT provider FROM usage_events WHERE request_id = 'fcp-1'`;
      assert.equal(row?.provider, "cheap");
    });
    assert.equal((await served(ctx.gw, user)).provider, "primary", "back to priority");
  });
});

Deno.test("force_cheaper_provider beats the routing_policy flag", async () => {
  await withGateway(async ({ gw, admin }) => {
    const user = await gw.token({ tenant: "acme" });
    const flag = await call(gw, "PUT", "/admin/flags/routing_policy", {
      token: admin,
      body: { default: "force:primary", reason: "pin primary" },
    });
    assert.equal(flag.status, 200, flag.text);
    assert.equal((await served(gw, user)).provider, "primary");
    await mustApply(gw, admin, "force_cheaper_provider");
    assert.equal((await served(gw, user)).provider, "cheap");
    await mustRevert(gw, admin, "force_cheaper_provider");
    assert.equal((await served(gw, user)).provider, "primary");
  });
});

Deno.test("avoid_provider: the avoided provider's deployments are tried last, not removed", async () => {
  await withGateway(async (ctx) => {
    const user = await ctx.gw.token({ tenant: "acme" });
    assert.equal((await served(ctx.gw, user)).provider, "primary");
    await applyRevert(ctx, "avoid_provider", { provider: "primary" }, async () => {
      assert.equal((await served(ctx.gw, user)).provider, "cheap");
      // An alias with no other deployment is still served by the avoided provider.
      const mini = await served(ctx.gw, user, { prompt: "hi", model_hint: "convergio-mini" });
      assert.equal(mini.provider, "primary");
      assert.equal(mini.model, "convergio-mini");
    });
    assert.equal((await served(ctx.gw, user)).provider, "primary");
  });
});

Deno.test("lower_model: every chat alias is served on the smaller one, and says so", async () => {
  await withGateway(async (ctx) => {
    const user = await ctx.gw.token({ tenant: "acme" });
    const before = await served(ctx.gw, user);
    assert.equal(before.model, "convergio-demo");
    assert.equal(before.downgradedFrom, null);
    await applyRevert(ctx, "lower_model", { to: "convergio-mini" }, async () => {
      const s = await served(ctx.gw, user, { prompt: "small please" }, "lm-1");
      assert.equal(s.model, "convergio-mini");
      assert.equal(s.downgradedFrom, "convergio-demo");
      assert.equal(s.reply.json.usage.downgraded_from, "convergio-demo");
      // The OpenAI surface too: the response model is the lowered alias.
      const oa = await call(ctx.gw, "POST", "/v1/chat/completions", {
        token: user,
        body: { model: "convergio-demo", messages: [{ role: "user", content: "hi" }] },
      });
      assert.equal(oa.status, 200, oa.text);
      assert.equal(oa.json.model, "convergio-mini");
      assert.equal(oa.headers.get("x-convergio-downgraded-from"), "convergio-demo");
      await ctx.gw.runtime.batcher!.drain();
      const [row] = await ctx.gw.runtime.db!.sql<{ model: string }[]>`
        SELECT model FROM usage_events WHERE request_id = 'lm-1'`;
      assert.equal(row?.model, "convergio-mini", "the ledger meters the model served");
    });
    const after = await served(ctx.gw, user);
    assert.equal(after.model, "convergio-demo");
    assert.equal(after.downgradedFrom, null);
  });
});

const WEATHER = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Weather for a city",
    parameters: { type: "object", properties: { city: { type: "string" } } },
  },
};

/** An OpenAI chat completion answering in text. */
const completion = (rec: Received) =>
  json(200, {
    id: "chatcmpl-up",
    object: "chat.completion",
    created: 1,
    model: rec.body.model,
    choices: [{
      index: 0,
      message: { role: "assistant", content: "sunny" },
      finish_reason: "stop",
    }],
    usage: { prompt_tokens: 7, completion_tokens: 1, total_tokens: 8 },
  });

Deno.test("disable_tools: a request with tools succeeds and the upstream gets none", async () => {
  await withUpstream((_req, rec) => completion(rec), async (up) => {
    await withGateway(async (ctx) => {
      const managed = await ctx.gw.token({ tenant: "acme", mode: "managed" });
      const byok = await ctx.gw.token({ tenant: "byokco", mode: "byok" });
      const ask = (token: string) =>
        call(ctx.gw, "POST", "/v1/chat/completions", {
          token,
          body: {
            model: "tooly",
            messages: [{ role: "user", content: "weather in Rome?" }],
            tools: [WEATHER],
            tool_choice: "auto",
          },
        });
      const before = await ask(managed);
      assert.equal(before.status, 200, before.text);
      assert.equal(up.received.length, 1);
      assert.deepEqual(
        (up.received[0].body.tools as Array<{ function: { name: string } }>)
          .map((t) => t.function.name),
        ["get_weather"],
      );
      assert.equal(up.received[0].body.tool_choice, "auto");

      await applyRevert(ctx, "disable_tools", undefined, async () => {
        for (const token of [managed, byok]) {
          const res = await ask(token);
          assert.equal(res.status, 200, res.text);
          assert.equal(res.json.choices[0].message.content, "sunny");
          const seen = up.received.at(-1)!;
          assert.equal(seen.body.model, "up-model");
          assert.equal("tools" in seen.body, false, "no tools went upstream");
          assert.equal("tool_choice" in seen.body, false, "no tool_choice went upstream");
        }
        assert.equal(up.received.length, 3);
      });

      const after = await ask(managed);
      assert.equal(after.status, 200, after.text);
      assert.equal(up.received.length, 4);
      assert.equal((up.received[3].body.tools as unknown[]).length, 1, "tools go up again");
    }, `${up.origin}/v1`);
  });
});

Deno.test("enforce_downgrade: the managed lane gets its downgrade model; BYOK is untouched", async () => {
  await withGateway(async (ctx) => {
    const managed = await ctx.gw.token({ tenant: "acme", mode: "managed" });
    const byok = await ctx.gw.token({ tenant: "acme", mode: "byok" });
    // A managed tenant with no downgrade model has nothing to be downgraded to.
    const plain = await ctx.gw.token({ tenant: "plain", mode: "managed" });
    assert.equal((await served(ctx.gw, managed)).model, "convergio-demo");
    await applyRevert(ctx, "enforce_downgrade", undefined, async () => {
      const m = await served(ctx.gw, managed);
      assert.equal(m.model, "convergio-mini");
      assert.equal(m.downgradedFrom, "convergio-demo");
      assert.equal(m.reply.json.usage.downgraded_from, "convergio-demo");
      const b = await served(ctx.gw, byok);
      assert.equal(b.model, "convergio-demo");
      assert.equal(b.downgradedFrom, null);
      const p = await served(ctx.gw, plain);
      assert.equal(p.model, "convergio-demo");
    });
    const after = await served(ctx.gw, managed);
    assert.equal(after.model, "convergio-demo");
    assert.equal(after.downgradedFrom, null);
  });
});

Deno.test("block_new_managed_tenants: tenants created after it get feature.disabled in managed mode", async () => {
  await withGateway(async (ctx) => {
    const { gw, admin } = ctx;
    const putTenant = (id: string) =>
      call(gw, "PUT", `/admin/tenants/${id}`, {
        token: admin,
        body: { type: "business", reason: `onboard ${id}` },
      });
    const early = await putTenant("early");
    assert.equal(early.status, 200, early.text);
    const tok = (tenant: string, mode: "managed" | "byok" = "managed") =>
      gw.token({ tenant, mode });

    await applyRevert(ctx, "block_new_managed_tenants", undefined, async () => {
      const late = await putTenant("late");
      assert.equal(late.status, 200, late.text);
      const refused = await chat(gw, await tok("late"));
      assert.equal(refused.status, 403, refused.text);
      assert.equal(refused.json.error.code, "feature.disabled");
      // A tenant nobody created is new too.
      const stranger = await chat(gw, await tok("stranger"));
      assert.equal(stranger.status, 403, stranger.text);
      assert.equal(stranger.json.error.code, "feature.disabled");
      // Older tenants go on: created before the block, or from the config file.
      assert.equal((await served(gw, await tok("early"))).provider, "primary");
      assert.equal((await served(gw, await tok("acme"))).provider, "primary");
      // BYOK is never blocked.
      assert.equal((await served(gw, await tok("late", "byok"))).provider, "primary");
      // A config tenant the admin API touches during the block is not new either.
      const touched = await call(gw, "PUT", "/admin/tenants/acme", {
        token: admin,
        body: { limits: { rpm: 500 }, reason: "raise acme's rate limit" },
      });
      assert.equal(touched.status, 200, touched.text);
      assert.equal((await served(gw, await tok("acme"))).provider, "primary");
    });
    assert.equal((await served(gw, await tok("late"))).provider, "primary");
    assert.equal((await served(gw, await tok("stranger"))).provider, "primary");
  });
});

Deno.test("voice_text: voice.start answers voice.degraded text-only; text turns still work", async () => {
  await withGateway(async (ctx) => {
    const token = await ctx.gw.token({ tenant: "acme", mode: "managed" });
    const { c } = await connect(ctx.gw, token);
    try {
      c.send(voiceStart("v-before"));
      await c.nextOf("voice.ready", "v-before");
      await stopVoice(c, "v-before");

      await applyRevert(ctx, "voice_text", undefined, async () => {
        c.send(voiceStart("v-during"));
        const degraded = await c.nextOf("voice.degraded", "v-during");
        assert.equal(degraded.mode, "text-only");
        // A transcript is answered on the chat path.
        c.send({ type: "voice.transcript", request_id: "t-during", text: "hello there" });
        const done = await c.nextOf("chat.complete", "t-during");
        assert.equal(done.type, "chat.complete");
        // No voice request was opened for v-during: no ready, and stop finds nothing.
        assert.equal(
          c.frames.some((f) => f.type === "voice.ready" && f.request_id === "v-during"),
          false,
        );
        c.send({ type: "voice.stop", request_id: "v-during" });
        const err = await c.nextOf("error", "v-during");
        assert.equal(err.code, "request.invalid");
      });

      c.send(voiceStart("v-after"));
      const ready = await c.nextOf("voice.ready", "v-after");
      assert.equal(ready.provider, "rt");
      await stopVoice(c, "v-after");
    } finally {
      await c.close();
    }
  });
});

Deno.test("push_to_talk: no server turn detection; one turn per voice.stop", async () => {
  await withGateway(async (ctx) => {
    const token = await ctx.gw.token({ tenant: "acme", mode: "managed" });
    const { c } = await connect(ctx.gw, token);
    // 60 chunks of 20 ms: 1.2 s. With VAD the demo provider hears a turn end at 1 s.
    const audio = pcmChunks(60);
    const heard = async (id: string) => {
      sendChunks(c, id, audio);
      await stopVoice(c, id);
      return c.frames.filter((f) =>
        f.request_id === id && f.type === "voice.transcript" && f.role === "user"
      ).map((f) => f.text);
    };
    try {
      c.send(voiceStart("vad-before", { mode: "vad" }));
      await c.nextOf("voice.ready", "vad-before");
      assert.deepEqual(await heard("vad-before"), [
        "I heard 1.0 seconds of audio.",
        "I heard 0.2 seconds of audio.",
      ]);

      await applyRevert(ctx, "push_to_talk", undefined, async () => {
        c.send(voiceStart("vad-during", { mode: "vad" }));
        const degraded = await c.nextOf("voice.degraded", "vad-during");
        assert.equal(degraded.mode, "push-to-talk");
        await c.nextOf("voice.ready", "vad-during");
        assert.deepEqual(await heard("vad-during"), ["I heard 1.2 seconds of audio."]);
      });

      c.send(voiceStart("vad-after", { mode: "vad" }));
      await c.nextOf("voice.ready", "vad-after");
      assert.equal(
        c.frames.some((f) => f.type === "voice.degraded" && f.request_id === "vad-after"),
        false,
      );
      assert.deepEqual(await heard("vad-after"), [
        "I heard 1.0 seconds of audio.",
        "I heard 0.2 seconds of audio.",
      ]);
    } finally {
      await c.close();
    }
  });
});

Deno.test("read_only: admin writes get 503 db.read_only, reads and traffic go on, and it lifts itself", async () => {
  await withGateway(async (ctx) => {
    const { gw, admin } = ctx;
    const user = await gw.token({ tenant: "acme", mode: "managed" });
    const putTenant = (id: string) =>
      call(gw, "PUT", `/admin/tenants/${id}`, { token: admin, body: { reason: `create ${id}` } });
    assert.equal((await putTenant("before")).status, 200);

    await applyRevert(ctx, "read_only", undefined, async () => {
      assertReadOnly(await putTenant("x"), "PUT /admin/tenants/x");
      await assertWritesRefusedReadsCached(gw, admin, ["before"]);
      // Other mitigations still go on and off.
      await mustApply(gw, admin, "disable_tools");
      await mustRevert(gw, admin, "disable_tools");
      // Traffic is not an admin write.
      assert.equal((await served(gw, user)).provider, "primary");
    });

    const x = await putTenant("x");
    assert.equal(x.status, 200, x.text);
    // The refused writes left no trace; the accepted ones did.
    const rows = await audit(gw, admin, { action: "tenant." });
    assert.deepEqual(rows.map((r) => r.target), ["tenant:x", "tenant:before"]);
    const flagRows = await audit(gw, admin, { action: "flag." });
    assert.equal(flagRows.length, 0);
  });
});

Deno.test("RB-1 lever: POST /admin/flags/rollback undoes the newest flag change", async () => {
  await withGateway(async ({ gw, admin }) => {
    const user = await gw.token({ tenant: "acme" });
    const put = await call(gw, "PUT", "/admin/flags/routing_policy", {
      token: admin,
      body: { default: "force:cheap", reason: "try the cheap provider" },
    });
    assert.equal(put.status, 200, put.text);
    assert.equal((await served(gw, user)).provider, "cheap");

    const rb = await call(gw, "POST", "/admin/flags/rollback", {
      token: admin,
      body: { reason: "cheap provider misbehaves" },
    });
    assert.equal(rb.status, 200, rb.text);
    assert.equal(rb.json.flag, "routing_policy");
    assert.equal(rb.json.state.default, "priority");
    assert.equal((await served(gw, user)).provider, "primary");

    const [rollback, update] = await audit(gw, admin, { action: "flag." });
    assert.equal(update.action, "flag.update");
    assert.equal(rollback.action, "flag.rollback");
    assert.equal(rollback.target, "flag:routing_policy");
    assert.equal(rollback.actor, ADMIN_USER);
    assert.equal(rollback.reason, "cheap provider misbehaves");
    assert.equal(rb.json.undid, update.id);
    assert.equal((rollback.before as { default: string }).default, "force:cheap");
    assert.equal((rollback.after as { default: string }).default, "priority");

    // A rollback is a flag change too: a second one re-applies what the first undid.
    const again = await call(gw, "POST", "/admin/flags/rollback", {
      token: admin,
      body: { reason: "it was the network after all" },
    });
    assert.equal(again.status, 200, again.text);
    assert.equal(again.json.state.default, "force:cheap");
    assert.equal(again.json.undid, rollback.id);
    assert.equal((await served(gw, user)).provider, "cheap");
    const flags = await call(gw, "GET", "/admin/flags", { token: admin });
    assert.equal(flags.json.flags.routing_policy.default, "force:cheap");
  });
});

Deno.test("RB-4 lever: the voice_mode kill switch refuses voice.start until lifted", async () => {
  await withGateway(async ({ gw, admin }) => {
    const token = await gw.token({ tenant: "acme", mode: "managed" });
    const { c } = await connect(gw, token);
    try {
      const kill = await call(gw, "POST", "/admin/flags/voice_mode/kill", {
        token: admin,
        body: { reason: "voice provider down" },
      });
      assert.equal(kill.status, 200, kill.text);
      assert.equal(kill.json.state.killed, true);
      c.send(voiceStart("k-1"));
      const err = await c.nextOf("error", "k-1");
      assert.equal(err.code, "feature.disabled");
      const explain = await call(gw, "GET", "/admin/flags?tenant=acme", { token: admin });
      assert.deepEqual(explain.json.flags.voice_mode.for_tenant, {
        value: "off",
        source: "killed",
      });

      const unkill = await call(
        gw,
        "DELETE",
        `/admin/flags/voice_mode/kill?reason=${encodeURIComponent("voice provider back")}`,
        { token: admin },
      );
      assert.equal(unkill.status, 200, unkill.text);
      assert.equal(unkill.json.state.killed, false);
      c.send(voiceStart("k-2"));
      await c.nextOf("voice.ready", "k-2");
      await stopVoice(c, "k-2");

      const rows = await audit(gw, admin, { target: "flag:voice_mode" });
      assert.deepEqual(rows.map((r) => [r.action, r.actor, r.reason]), [
        ["flag.unkill", ADMIN_USER, "voice provider back"],
        ["flag.kill", ADMIN_USER, "voice provider down"],
      ]);
      assert.equal((rows[1].after as { killed: boolean }).killed, true);
      assert.equal((rows[0].before as { killed: boolean }).killed, true);
      assert.equal((rows[0].after as { killed: boolean }).killed, false);
    } finally {
      await c.close();
    }
  });
});

Deno.test("mitigations API: validation and access", async () => {
  await withGateway(async ({ gw, admin }) => {
    const noFlagChange = await call(gw, "POST", "/admin/flags/rollback", {
      token: admin,
      body: { reason: "nothing to undo yet" },
    });
    assert.equal(noFlagChange.status, 404, noFlagChange.text);

    const unknown = await applyMitigation(gw, admin, "reboot_everything");
    assert.equal(unknown.status, 404, unknown.text);
    assert.equal(unknown.json.error.code, "request.invalid");
    assert.equal((await revertMitigation(gw, admin, "reboot_everything")).status, 404);

    const cases: Array<[string, Record<string, unknown> | undefined, RegExp]> = [
      ["lower_model", { to: "no-such-alias" }, /unknown model/],
      // A voice alias would make every chat request fail: refused up front.
      ["lower_model", { to: VOICE }, /voice model/],
      ["lower_model", undefined, /params\.to/],
      ["avoid_provider", { provider: "nobody" }, /unknown provider/],
      ["avoid_provider", {}, /params\.provider/],
      ["disable_tools", { extra: true }, /params/],
    ];
    for (const [name, params, message] of cases) {
      const res = await applyMitigation(gw, admin, name, { params });
      assert.equal(res.status, 400, `${name} ${JSON.stringify(params)}: ${res.text}`);
      assert.equal(res.json.error.code, "request.invalid");
      assert.match(res.json.error.message, message);
    }

    const noReason = await applyMitigation(gw, admin, "disable_tools", { reason: null });
    assert.equal(noReason.status, 400, noReason.text);
    const shortReason = await applyMitigation(gw, admin, "disable_tools", { reason: "x" });
    assert.equal(shortReason.status, 400, shortReason.text);

    const inactive = await revertMitigation(gw, admin, "disable_tools");
    assert.equal(inactive.status, 404, inactive.text);
    assert.match(inactive.json.error.message, /not active/);

    await mustApply(gw, admin, "disable_tools");
    const noRevertReason = await revertMitigation(gw, admin, "disable_tools", null);
    assert.equal(noRevertReason.status, 400, noRevertReason.text);
    assert.notEqual(await mitigationState(gw, admin, "disable_tools"), null, "still on");

    for (const roles of [["user"], ["tenant_admin"]] as const) {
      const token = await gw.token({ tenant: "acme", roles: [...roles] });
      const apply = await applyMitigation(gw, token, "lower_model", {
        params: { to: "convergio-mini" },
      });
      assert.equal(apply.status, 403, `${roles}: ${apply.text}`);
      assert.equal(apply.json.error.code, "auth.forbidden");
      assert.equal((await revertMitigation(gw, token, "disable_tools")).status, 403);
      assert.equal((await call(gw, "GET", "/admin/mitigations", { token })).status, 403);
    }
    assert.equal((await call(gw, "GET", "/admin/mitigations")).status, 401);

    // Nothing refused reached the log: one apply, no revert.
    const rows = await audit(gw, admin, { action: "mitigation." });
    assert.deepEqual(rows.map((r) => [r.action, r.target]), [
      ["mitigation.apply", "mitigation:disable_tools"],
    ]);
    assert.equal(await mitigationState(gw, admin, "lower_model"), null);

    // An autopilot can neither take over nor lift the operator's mitigation: both
    // calls change nothing, so they write no audit row and announce no change.
    const control = gw.deps.aggregator!.control;
    const edge = { actor: "autopilot", actor_tenant: null, request_id: null };
    const changes = () => gw.logs.filter((l) => l.msg === "admin change").length;
    const before = changes();
    const held = { reason: "autopilot: RB-2", source: "edge-x" };
    await leverApply(control, gw.deps.config, edge, "disable_tools", held);
    await leverRevert(control, edge, "disable_tools", held);
    assert.equal(changes(), before);
    assert.equal((await audit(gw, admin, { action: "mitigation." })).length, 1);
    assert.equal((await mitigationState(gw, admin, "disable_tools"))?.actor, ADMIN_USER);

    // The list names every mitigation with its runbook.
    const list = await call(gw, "GET", "/admin/mitigations", { token: admin });
    assert.deepEqual(Object.keys(list.json.mitigations).sort(), [...MITIGATION_NAMES].sort());
    assert.equal(list.json.mitigations.read_only.runbook, "RB-5");
  });
});
