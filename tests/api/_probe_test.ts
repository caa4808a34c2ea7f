import { withFullGateway } from "../support/gateway.ts";
import { admin, as, audit, chat, REASON } from "../support/admin_client.ts";

Deno.test("probe", async () => {
  await withFullGateway({}, async (gw) => {
    const root = await admin(gw);
    let r = await root.put("/admin/flags/routing_policy", { default: "cheapest", reason: REASON });
    console.log("put", r.status);
    r = await root.post("/admin/flags/rollback", { reason: REASON });
    console.log("rb1", r.status, r.text);
    r = await root.post("/admin/flags/rollback", { reason: REASON });
    console.log("rb2", r.status, r.text);
    // tenant prefix leak
    await root.put("/admin/tenants/acme/tools", { tools: ["x"], reason: REASON });
    await root.put("/admin/tenants/acme-west/tools", { tools: ["y"], reason: REASON });
    const ta = await as(gw, { tenant: "acme", user: "ta", roles: ["tenant_admin"] });
    console.log((await audit(gw, ta)).map((e: {target: string}) => e.target));
    // PUT tenant wipes
    await root.put("/admin/plans/gold", { limits: { rpm: 5 }, reason: REASON });
    await root.put("/admin/tenants/acme", { plan: "gold", reason: REASON });
    r = await root.put("/admin/tenants/acme", { limits: { tpm: 5000 }, reason: REASON });
    console.log(r.json.tenant);
    const u = await as(gw, {tenant: "acme"});
    console.log((await chat(u)).status);
  });
});
