import type { Context } from "hono";
import type { z } from "zod";
import { GatewayError } from "../errors.ts";

/** Reads and validates a JSON body; every failure is `request.invalid` naming the field. */
export async function parseBody<S extends z.ZodType>(c: Context, schema: S): Promise<z.infer<S>> {
  return parseJsonText(await c.req.text(), schema);
}

/** The same for a body already read as text (a signed one, whose bytes were checked first). */
export function parseJsonText<S extends z.ZodType>(text: string, schema: S): z.infer<S> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new GatewayError("request.invalid", "request body is not valid JSON");
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = issue.path.join(".");
    throw new GatewayError(
      "request.invalid",
      field ? `${field}: ${issue.message}` : issue.message,
      field ? { param: field } : {},
    );
  }
  return parsed.data;
}
