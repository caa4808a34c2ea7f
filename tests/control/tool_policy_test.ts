import assert from "node:assert/strict";
import type { FlagState } from "../../src/control/flags.ts";
import type { ControlSnapshot } from "../../src/control/snapshot.ts";
import {
  policeRequestTools,
  policeToolCall,
  ToolDenied,
  toolRefusal,
} from "../../src/control/tool_policy.ts";
import { ControlView } from "../../src/control/view.ts";
import type { ChatRequest } from "../../src/providers/chat_schema.ts";
import { snapshot } from "../support/control.ts";
import { testConfig } from "../support/gateway.ts";
import { mitigationState, tenantSettings } from "./_helpers.ts";

type Plugin = ControlSnapshot["plugins"][number];

const plugin = (name: string, over: Partial<Plugin>): Plugin => ({
  name,
  version: "1.0.0",
  description: "",
  tools: [],
  permissions: [],
  status: "approved",
  ...over,
});

const PLUGINS = [
  plugin("files", { tools: ["fs_read", "fs_write"], permissions: ["fs.read", "fs.write"] }),
  plugin("web", { tools: ["fetch_url"], permissions: ["net.http"] }),
  plugin("shell", { tools: ["exec"], permissions: [], status: "pending_approval" }),
];

/**
 * Tenant `listed` may use only search and fs_read; `open` has no allow-list.
 * plugin_permissions grants `granted` net.http, fs.read and fs.write.
 */
function view(
  over: { permissions?: Partial<FlagState>; mitigations?: ControlSnapshot["mitigations"] } = {},
) {
  return new ControlView(
    testConfig(),
    snapshot({
      tenants: { listed: tenantSettings({ tools: ["search", "fs_read"] }) },
      plugins: PLUGINS,
      flags: {
        plugin_permissions: {
          default: [],
          overrides: { granted: ["fs.read", "fs.write", "net.http"] },
          canary: null,
          killed: false,
          ...over.permissions,
        },
      },
      mitigations: over.mitigations ?? {},
    }),
  );
}

function request(tools: string[], extra: Partial<ChatRequest> = {}): ChatRequest {
  return {
    model: "convergio-demo",
    messages: [{ role: "user", content: "hi" }],
    tools: tools.map((name) => ({ type: "function", function: { name } })),
    ...extra,
  };
}

/** Matches a ToolDenied for `tool` in `direction` whose message says `why`. */
function denied(tool: string, direction: "request" | "response", why: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof ToolDenied, `expected ToolDenied, got ${err}`);
    assert.equal(err.code, "tool.denied");
    assert.equal(err.status, 403);
    assert.equal(err.tool, tool);
    assert.equal(err.direction, direction);
    assert.equal(err.param, direction === "request" ? "tools" : undefined);
    assert.match(err.message, why);
    return true;
  };
}

Deno.test("toolRefusal: a tenant with an allow-list may use only the tools on it", () => {
  const v = view();
  assert.equal(toolRefusal(v, "listed", "search"), undefined);
  assert.match(toolRefusal(v, "listed", "calculator")!, /not on tenant listed's allow-list/);
  assert.equal(toolRefusal(v, "open", "calculator"), undefined);
});

Deno.test("toolRefusal: a pending plugin's tools are refused even on the allow-list", () => {
  const v = view();
  assert.match(toolRefusal(v, "open", "exec")!, /plugin shell, which awaits an admin's approval/);
});

Deno.test("toolRefusal: a plugin tool needs every permission the flag grants the tenant", () => {
  const v = view();
  assert.match(toolRefusal(v, "open", "fs_write")!, /needs fs\.read, fs\.write, not granted/);
  assert.match(toolRefusal(v, "open", "fetch_url")!, /needs net\.http, not granted to tenant open/);
  assert.equal(toolRefusal(v, "granted", "fs_write"), undefined);
  assert.equal(toolRefusal(v, "granted", "fetch_url"), undefined);
  // The allow-list still applies to a plugin tool whose permissions are granted.
  assert.match(toolRefusal(v, "listed", "fetch_url")!, /allow-list/);
});

Deno.test("toolRefusal: a partial grant names only what is missing", () => {
  const v = view({ permissions: { default: ["fs.read"], overrides: {} } });
  assert.match(toolRefusal(v, "open", "fs_write")!, /needs fs\.write, not granted/);
  // Permissions are the plugin's, not the tool's: its read-only tool needs fs.write too.
  assert.match(toolRefusal(v, "listed", "fs_read")!, /needs fs\.write, not granted/);
});

Deno.test("toolRefusal: the plugin_permissions kill switch takes every grant back", () => {
  const v = view({ permissions: { killed: true } });
  assert.match(toolRefusal(v, "granted", "fetch_url")!, /needs net\.http/);
});

Deno.test("policeRequestTools passes an allowed request through unchanged", () => {
  const req = request(["search", "fs_read"], { tool_choice: "auto" });
  assert.equal(policeRequestTools(view(), "granted", req), req);
  const plain: ChatRequest = { model: "m", messages: [{ role: "user", content: "hi" }] };
  assert.equal(policeRequestTools(view(), "listed", plain), plain);
});

Deno.test("policeRequestTools refuses the first declared tool the tenant may not use", () => {
  assert.throws(
    () => policeRequestTools(view(), "listed", request(["search", "calculator", "exec"])),
    denied("calculator", "request", /allow-list/),
  );
  assert.throws(
    () => policeRequestTools(view(), "open", request(["fetch_url"])),
    denied("fetch_url", "request", /needs net\.http/),
  );
});

Deno.test("disable_tools strips tools and tool_choice instead of refusing them", () => {
  const v = view({ mitigations: { disable_tools: mitigationState() } });
  const req = request(["calculator", "exec"], { tool_choice: "required", temperature: 0.5 });
  assert.deepEqual(policeRequestTools(v, "listed", req), {
    model: "convergio-demo",
    messages: [{ role: "user", content: "hi" }],
    temperature: 0.5,
  });
  const choiceOnly: ChatRequest = {
    model: "m",
    messages: [{ role: "user", content: "hi" }],
    tool_choice: "auto",
  };
  assert.equal("tool_choice" in policeRequestTools(v, "open", choiceOnly), false);
  assert.equal(req.tools?.length, 2, "the caller's request object is not modified");
});

Deno.test("policeToolCall refuses a tool the request did not declare", () => {
  assert.throws(
    () => policeToolCall(view(), "open", request(["search"]), "calculator"),
    denied("calculator", "response", /did not declare/),
  );
  assert.throws(
    () => policeToolCall(view(), "open", request([]), "search"),
    denied("search", "response", /did not declare/),
  );
});

Deno.test("policeToolCall applies the tenant's policy to a declared tool", () => {
  const req = request(["search", "exec", "fetch_url"]);
  assert.equal(policeToolCall(view(), "open", req, "search"), undefined);
  assert.equal(policeToolCall(view(), "granted", req, "fetch_url"), undefined);
  assert.throws(
    () => policeToolCall(view(), "open", req, "exec"),
    denied("exec", "response", /approval/),
  );
  assert.throws(
    () => policeToolCall(view(), "open", req, "fetch_url"),
    denied("fetch_url", "response", /net\.http/),
  );
});
