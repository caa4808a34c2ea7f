import { adminToken, applyMitigation, chat, withControlGateway } from "../support/control_e2e.ts";
Deno.test("probe", async () => {
  await withControlGateway({
    providers: { demo: { protocol: "mock" }, rt: { protocol: "realtime_mock" } },
    models: {
      "convergio-demo": { deployments: [{ provider: "demo", model: "d" }], price: { input_per_1m: 1, output_per_1m: 1 } },
      "voice-test": { deployments: [{ provider: "rt", model: "r" }], price: { input_per_1m: 1, output_per_1m: 1 } },
    },
    voice: { model: "voice-test" },
  }, async (gw) => {
    const admin = await adminToken(gw);
    const r = await applyMitigation(gw, admin, "lower_model", { params: { to: "voice-test" } });
    console.log(r.status, r.text);
    const c = await chat(gw, await gw.token({ tenant: "a" }));
    console.log(c.status, c.text);
  });
});
