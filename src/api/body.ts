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
  return parseValue(raw, schema);
}

/** A query string's parameters, validated the same way; a whole-query problem names "query". */
export function parseQuery<S extends z.ZodType>(c: Context, schema: S): z.infer<S> {
  return parseValue(c.req.query(), schema, "query");
}

/** Validates a value; a failure is `request.invalid` naming the field (or `whole`). */
function parseValue<S extends z.ZodType>(raw: unknown, schema: S, whole?: string): z.infer<S> {
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = issue.path.join(".");
    const name = field || whole;
    throw new GatewayError(
      "request.invalid",
      name ? `${name}: ${issue.message}` : issue.message,
      field ? { param: field } : {},
    );
  }
  return parsed.data;
}
