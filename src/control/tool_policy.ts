import { GatewayError } from "../errors.ts";
import type { ChatRequest } from "../providers/chat_schema.ts";
import type { ControlView } from "./view.ts";

export type ToolDirection = "request" | "response";

/** Why a tool is refused for a tenant, or undefined when it may be used. */
export function toolRefusal(view: ControlView, tenant: string, tool: string): string | undefined {
  const allowList = view.tools(tenant);
  if (allowList && !allowList.includes(tool)) {
    return `tool "${tool}" is not on tenant ${tenant}'s allow-list`;
  }
  const plugin = view.snapshot.plugins.find((p) => p.tools.includes(tool));
  if (!plugin) return undefined;
  if (plugin.status !== "approved") {
    return `tool "${tool}" belongs to plugin ${plugin.name}, which awaits an admin's approval`;
  }
  const granted = view.flag("plugin_permissions", tenant);
  const missing = plugin.permissions.filter((p) => !granted.includes(p));
  if (missing.length) {
    return `tool "${tool}" (plugin ${plugin.name}) needs ${
      missing.join(", ")
    }, not granted to tenant ${tenant}`;
  }
  return undefined;
}

export class ToolDenied extends GatewayError {
  constructor(readonly tool: string, readonly direction: ToolDirection, why: string) {
    super("tool.denied", why, { param: direction === "request" ? "tools" : undefined });
  }
}

/**
 * The tools a request may go upstream with. Under the disable_tools
 * mitigation they are stripped (the model answers in text); otherwise each
 * declared tool must pass the tenant's policy, or the request is refused.
 */
export function policeRequestTools(
  view: ControlView,
  tenant: string,
  request: ChatRequest,
): ChatRequest {
  if (!request.tools?.length && !request.tool_choice) return request;
  if (view.mitigation("disable_tools")) {
    const { tools: _t, tool_choice: _c, ...rest } = request;
    return rest as ChatRequest;
  }
  for (const t of request.tools ?? []) {
    const why = toolRefusal(view, tenant, t.function.name);
    if (why) throw new ToolDenied(t.function.name, "request", why);
  }
  return request;
}

/** A tool call the model returned: it must be one the request declared, and allowed. */
export function policeToolCall(
  view: ControlView,
  tenant: string,
  request: ChatRequest,
  name: string,
): void {
  if (!request.tools?.some((t) => t.function.name === name)) {
    throw new ToolDenied(
      name,
      "response",
      `the model called tool "${name}", which the request did not declare`,
    );
  }
  const why = toolRefusal(view, tenant, name);
  if (why) throw new ToolDenied(name, "response", why);
}
