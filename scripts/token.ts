/**
 * Mints a development JWT signed with the gateway's HS256 key.
 *   deno task token --tenant <id> --user <id> [--role admin] [--mode byok|managed] [--ttl 1h]
 */
import { parseArgs } from "node:util";
import { signingSecret } from "../src/auth/dev_secret.ts";
import { RevocationList } from "../src/auth/revocation.ts";
import { createTokenService } from "../src/auth/tokens.ts";
import { systemClock } from "../src/clock.ts";
import { ConfigError, loadConfig, ModeSchema, ROLE_NAMES } from "../src/config.ts";

const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

export function parseTtl(text: string): number {
  const match = /^(\d+)([smhd])?$/.exec(text);
  if (!match || Number(match[1]) <= 0) {
    throw new Error(`--ttl must look like 90s, 15m, 1h or 7d, not "${text}"`);
  }
  return Number(match[1]) * UNITS[match[2] ?? "s"];
}

export async function run(
  args: string[],
  env: Record<string, string | undefined>,
): Promise<string> {
  const { values } = parseArgs({
    args,
    options: {
      tenant: { type: "string" },
      user: { type: "string" },
      role: { type: "string", multiple: true },
      mode: { type: "string", default: "byok" },
      ttl: { type: "string", default: "1h" },
    },
    strict: true,
  });
  if (!values.tenant || !values.user) throw new Error("--tenant and --user are required");
  const roles = (values.role ?? ["user"]).map((r) => {
    if (!(ROLE_NAMES as readonly string[]).includes(r)) {
      throw new Error(`--role must be one of ${ROLE_NAMES.join(", ")}, not "${r}"`);
    }
    return r as (typeof ROLE_NAMES)[number];
  });
  const mode = ModeSchema.safeParse(values.mode);
  if (!mode.success) throw new Error(`--mode must be byok or managed, not "${values.mode}"`);
  const config = loadConfig(env, Deno.readTextFileSync);
  const tokens = createTokenService({
    auth: config.auth,
    secret: await signingSecret(config.auth, config.data_dir),
    revocations: new RevocationList(systemClock),
    clock: systemClock,
  });
  const { token } = await tokens.mint({
    user_id: values.user,
    tenant_id: values.tenant,
    roles,
    mode: mode.data,
    ttl_s: parseTtl(values.ttl),
  });
  return token;
}

if (import.meta.main) {
  try {
    console.log(await run(Deno.args, Deno.env.toObject()));
  } catch (err) {
    console.error(err instanceof ConfigError ? err.message : `token: ${(err as Error).message}`);
    Deno.exit(2);
  }
}
