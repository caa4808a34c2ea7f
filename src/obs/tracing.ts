import {
  type Attributes,
  type Context,
  defaultTextMapGetter,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
  type Tracer,
} from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { toGatewayError } from "../errors.ts";

const propagator = new W3CTraceContextPropagator();

/**
 * The tracer the app uses when none is injected: the global one, which Deno
 * provides and exports over OTLP when run with OTEL_DENO=true (and which is
 * a no-op otherwise).
 */
export function defaultTracer(): Tracer {
  return trace.getTracer("convergio-gateway");
}

/**
 * Starts the request's root span. Under a server span that is already active
 * (Deno's own, with OTEL_DENO), it is that span's child: one trace holds the
 * HTTP server span, ours and Deno's fetch spans, and shares one sampling
 * decision. Otherwise it continues an inbound W3C `traceparent`.
 */
export function startRequestSpan(
  tracer: Tracer,
  headers: Headers,
  name: string,
  attributes: Attributes,
  active?: Context,
): { span: Span; ctx: Context } {
  const parent = active && trace.getSpan(active)
    ? active
    : headers.has("traceparent")
    ? propagator.extract(ROOT_CONTEXT, Object.fromEntries(headers), defaultTextMapGetter)
    : ROOT_CONTEXT;
  const span = tracer.startSpan(name, { kind: SpanKind.SERVER, attributes }, parent);
  return { span, ctx: trace.setSpan(parent, span) };
}

/** The trace id to log: a real one, or undefined when tracing is off and no parent came in. */
export function traceIdOf(span: Span): string | undefined {
  const id = span.spanContext().traceId;
  return /^0+$/.test(id) ? undefined : id;
}

/** Marks a span failed with the error's stable code as `error.type`. */
export function failSpan(span: Span, err: unknown): void {
  const code = toGatewayError(err).code;
  span.setAttribute("error.type", code);
  span.setStatus({ code: SpanStatusCode.ERROR, message: code });
}

/** Runs `fn` in a child span of `parent`, ending it however `fn` finishes. */
export async function inSpan<T>(
  tracer: Tracer,
  parent: Context,
  name: string,
  attributes: Attributes,
  fn: (span: Span, ctx: Context) => Promise<T>,
): Promise<T> {
  const span = tracer.startSpan(name, { attributes }, parent);
  try {
    return await fn(span, trace.setSpan(parent, span));
  } catch (err) {
    failSpan(span, err);
    throw err;
  } finally {
    span.end();
  }
}

/** OpenTelemetry's `gen_ai.provider.name` for a provider's wire protocol. */
export function genAiProviderName(protocol: string, flavor?: string): string {
  if (protocol === "openai") return flavor === "azure" ? "azure.ai.openai" : "openai";
  if (protocol === "anthropic") return "anthropic";
  return "convergio.mock";
}
