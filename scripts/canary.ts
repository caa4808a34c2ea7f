/**
 * Canary rollouts (ops spec §4; docs/canary.md): a new gateway version behind
 * nginx weights, or a feature-flag value through the flag canary API, widened
 * step by step while RB-1 and RB-2 are watched; rolled back at a breach.
 *   deno task canary version --stable HOST:PORT --canary HOST:PORT --upstream-file FILE …
 *   deno task canary flag <name> <value> --gateway URL …
 * The logic is src/canary/; this file only wires the real process to it.
 */
import { main, TOKEN_ENV } from "../src/canary/cli.ts";
import { realFiles, runCommand } from "../src/canary/nginx.ts";
import { realTimer } from "../src/canary/rollout.ts";

if (import.meta.main) {
  // Ctrl-C or SIGTERM mid-rollout rolls back before exiting, rather than leaving a half-shifted canary.
  const ac = new AbortController();
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(sig, () => ac.abort(new Error(`${sig}`)));
  }
  // Only the token's variable: the task runs with --allow-env=CONVERGIO_ADMIN_TOKEN.
  const code = await main(Deno.args, { [TOKEN_ENV]: Deno.env.get(TOKEN_ENV) }, {
    fetch: globalThis.fetch,
    timer: realTimer,
    run: runCommand,
    files: realFiles,
    io: { out: console.log, err: console.error },
    signal: ac.signal,
  });
  Deno.exit(code);
}
