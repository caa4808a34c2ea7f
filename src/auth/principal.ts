import { z } from "zod";
import { ModeSchema, ROLE_NAMES } from "../config.ts";

/** The caller, as proven by a verified token. */
export const PrincipalSchema = z.object({
  user_id: z.string().min(1),
  tenant_id: z.string().min(1),
  roles: z.array(z.enum(ROLE_NAMES)),
  mode: ModeSchema,
  /** Token id, for logout; absent on external tokens that carry none. */
  jti: z.string().optional(),
  /** Expiry, seconds since the epoch. */
  exp: z.number().optional(),
});
export type Principal = z.infer<typeof PrincipalSchema>;

/** The JWT claims a token must carry, beyond the registered ones. */
export const ClaimsSchema = z.object({
  sub: z.string().min(1),
  tenant_id: z.string().min(1),
  roles: z.array(z.enum(ROLE_NAMES)).default(["user"]),
  mode: ModeSchema.default("byok"),
  jti: z.string().optional(),
  exp: z.number().optional(),
});
