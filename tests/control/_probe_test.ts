import { adminToken, call, chat, mustApply, withControlGateway } from "../support/control_e2e.ts";
Deno.test("probe block + config tenant update", async () => {
  await withControlGateway({
    tenants: { acme: {} },
  }, async (gw) => {
    const admin = await adminToken(gw);
    const user = await gw.token({ tenant: "acme", mode: "managed" });
    console.log("before", (await chat(gw, user)).status);
    await mustApply(gw, admin, "block_new_managed_tenants");
    console.log("blocked, acme", (await chat(gw, user)).status);
    const put = await call(gw, "PUT", "/admin/tenants/acme", { token: admin, body: { limits: { rpm: 100 }, reason: "raise acme rpm" } });
    console.log("put", put.status);
    const r = await chat(gw, user);
    console.log("after update, acme", r.status, r.text);
  });
});
