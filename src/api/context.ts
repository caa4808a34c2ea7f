import type { Context } from "@opentelemetry/api";
import type { Principal } from "../auth/principal.ts";
import type { RequestRecord } from "../obs/request_record.ts";

/** Per-request values that middleware hands to handlers. */
export interface AppEnv {
  Variables: {
    requestId: string;
    principal: Principal;
    record: RequestRecord;
    /** Error body shape for this route: OpenAI-compatible routes answer in OpenAI's. */
    errorShape: "v7" | "openai";
    /** Trace context of the request's root span; child spans start from it. */
    trace: Context;
  };
}
