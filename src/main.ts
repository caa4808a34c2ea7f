import { createApp } from "./app.ts";
import { composeDeps } from "./compose.ts";
import { ConfigError, loadConfig } from "./config.ts";

/** Entry point: config → dependencies → app → Deno.serve, then a ready-to-use banner. */
async function main() {
  let config;
  try {
    config = loadConfig(Deno.env.toObject(), Deno.readTextFileSync);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      Deno.exit(1);
    }
    throw err;
  }
  const deps = await composeDeps(config);
  const app = createApp(deps);
  const { host, port } = config.server;
  const ac = new AbortController();
  const server = Deno.serve({
    hostname: host,
    port,
    signal: ac.signal,
    onListen: async ({ hostname, port }) => {
      const base = `http://${hostname}:${port}`;
      const { token } = await deps.tokens.mint({
        user_id: "dev-user",
        tenant_id: "dev-tenant",
        roles: ["admin"],
        mode: "byok",
        ttl_s: 24 * 3600,
      });
      const model = config.default_model ?? Object.keys(config.models)[0];
      console.log(
        [
          `Convergio Gateway listening on ${base}`,
          ``,
          `Development token (tenant dev-tenant, user dev-user, admin, 24 h):`,
          token,
          ``,
          `Try it:`,
          `curl -s ${base}/v1/chat/completions -H "Authorization: Bearer ${token}" \\`,
          `  -H "Content-Type: application/json" \\`,
          `  -d '{"model":"${model}","messages":[{"role":"user","content":"Hello"}]}'`,
          ``,
          `OpenAI SDK: baseURL "${base}/v1", apiKey = the token above.`,
        ].join("\n"),
      );
    },
  }, app.fetch);
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(sig, () => ac.abort());
  }
  await server.finished;
  // Settlements and alert deliveries still in flight finish before exit.
  await deps.guard.idle();
}

if (import.meta.main) await main();
