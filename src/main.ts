import { createRuntime } from "./compose.ts";
import { ConfigError, loadConfig } from "./config.ts";
import { ignoreLostTypeFetch } from "./db/client.ts";

/** Entry point: config → runtime of the role(s) → Deno.serve, then a ready-to-use banner. */
async function main() {
  globalThis.addEventListener("unhandledrejection", ignoreLostTypeFetch);
  let config, runtime;
  try {
    config = loadConfig(Deno.env.toObject(), Deno.readTextFileSync);
    runtime = await createRuntime(config);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      Deno.exit(1);
    }
    throw err;
  }
  const { deps } = runtime;
  const { host, port } = config.server;
  const ac = new AbortController();
  const server = Deno.serve({
    hostname: host,
    port,
    signal: ac.signal,
    onListen: async ({ hostname, port }) => {
      const base = `http://${hostname}:${port}`;
      if (config.role === "aggregator") {
        console.log(`Convergio aggregator listening on ${base}`);
        return;
      }
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
          `Convergio Gateway (${config.role}) listening on ${base}`,
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
  }, runtime.app.fetch);
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(sig, () => ac.abort());
  }
  await server.finished;
  // Metering spool, budget settlements and the database close in order.
  await runtime.close();
}

if (import.meta.main) await main();
