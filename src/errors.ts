/**
 * Stable error codes from the V7 contract. UI text may change; codes never do,
 * so this table is append-only.
 */
export const ERROR_CODES = {
  "auth.invalid": { status: 401, retryable: false, openaiType: "authentication_error" },
  "auth.forbidden": { status: 403, retryable: false, openaiType: "permission_error" },
  "quota.exceeded": { status: 429, retryable: true, openaiType: "rate_limit_error" },
  "billing.payment_required": { status: 402, retryable: false, openaiType: "billing_error" },
  "budget.blocked": { status: 402, retryable: false, openaiType: "billing_error" },
  "byok.missing_key": { status: 403, retryable: false, openaiType: "permission_error" },
  "feature.disabled": { status: 403, retryable: false, openaiType: "permission_error" },
  "request.invalid": { status: 400, retryable: false, openaiType: "invalid_request_error" },
  "provider.timeout": { status: 504, retryable: true, openaiType: "api_error" },
  "provider.rate_limited": { status: 429, retryable: true, openaiType: "rate_limit_error" },
  "provider.unavailable": { status: 503, retryable: true, openaiType: "api_error" },
  "internal": { status: 500, retryable: true, openaiType: "api_error" },
  "stream.slow_consumer": { status: 429, retryable: true, openaiType: "rate_limit_error" },
  "session.expired": { status: 410, retryable: false, openaiType: "invalid_request_error" },
  "tool.denied": { status: 403, retryable: false, openaiType: "permission_error" },
  /** The ledger database is unreachable or under the read_only mitigation; retry later. */
  "db.read_only": { status: 503, retryable: true, openaiType: "api_error" },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/**
 * nginx's status for a request its client abandoned, logged with the
 * `request.cancelled` error code: never seen by that client, never a 5xx.
 */
export const CLIENT_CLOSED = 499;
export const CANCELLED_CODE = "request.cancelled";

export class GatewayError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly retryable: boolean;
  /** The request field at fault, when there is one (OpenAI's `param`). */
  readonly param?: string;
  /** Response headers the error carries, such as `retry-after`. */
  readonly headers: Record<string, string>;

  constructor(
    code: ErrorCode,
    message: string,
    opts: {
      status?: number;
      param?: string;
      retryable?: boolean;
      cause?: unknown;
      headers?: Record<string, string>;
    } = {},
  ) {
    super(message, { cause: opts.cause });
    this.name = "GatewayError";
    this.code = code;
    this.status = opts.status ?? ERROR_CODES[code].status;
    this.retryable = opts.retryable ?? ERROR_CODES[code].retryable;
    this.param = opts.param;
    this.headers = opts.headers ?? {};
  }
}

/** Wraps anything thrown into a GatewayError without leaking internals to the client. */
export function toGatewayError(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  return new GatewayError("internal", "internal error", { cause: err });
}

/** Native V7 error body. */
export function v7ErrorBody(err: GatewayError, requestId: string) {
  return {
    error: {
      code: err.code,
      message: err.message,
      retryable: err.retryable,
      ...(err.param ? { param: err.param } : {}),
    },
    request_id: requestId,
  };
}

/** OpenAI-shaped error body, so unmodified SDKs raise their usual error classes. */
export function openaiErrorBody(err: GatewayError, requestId: string) {
  return {
    error: {
      message: err.message,
      type: ERROR_CODES[err.code].openaiType,
      param: err.param ?? null,
      code: err.code,
    },
    request_id: requestId,
  };
}
