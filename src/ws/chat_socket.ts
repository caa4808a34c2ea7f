import type { Tracer } from "@opentelemetry/api";
import { Hono } from "hono";
import type { ChatService } from "../api/chat_service.ts";
import type { AppEnv } from "../api/context.ts";
import { driveStream } from "../api/stream_driver.ts";
import { toCanonical } from "../api/v7_chat.ts";
import { v7Sink } from "../api/v7_sink.ts";
import { CANCELLED_CODE, CLIENT_CLOSED, GatewayError, toGatewayError } from "../errors.ts";
import type { FinishedRequest } from "../obs/request_record.ts";
import { beginRequest } from "../obs/request_scope.ts";
import { CHAT_FRAMES, type ChatStartFrame, parseFrame } from "./frames.ts";
import { acceptSocket, type SocketDeps } from "./connect.ts";
import type { WsSession } from "./session.ts";

export interface ChatSocketDeps extends SocketDeps {
  chat: ChatService;
  tracer: Tracer;
  defaultModel: string;
  /** Where every request's record ends: log line, metrics, usage event. */
  report: (done: FinishedRequest) => void;
}

/**
 * Runs one `chat.start` on a session: the same chat service, guard and
 * metering as HTTP, framed as the contract's WebSocket frames. Its usage
 * event's request id is the session id plus the client's, so clients may
 * reuse request ids across sessions.
 */
export async function runChat(
  deps: ChatSocketDeps,
  session: WsSession,
  frame: ChatStartFrame,
  route: string,
): Promise<void> {
  const { clock, tracer, chat } = deps;
  const id = frame.request_id;
  const ac = new AbortController();
  session.inflight.set(id, ac);
  const { record, ctx } = beginRequest({
    requestId: `${session.id}:${id}`,
    method: "WS",
    route,
    headers: new Headers(),
    clock,
    tracer,
    onEnd: deps.report,
  });
  record.metered = true;
  record.identify(session.principal);
  record.fields.session_id = session.id;
  record.defer();
  const send = (type: string, data: Record<string, unknown>) => {
    if (!session.send({ type, request_id: id, ...data })) {
      throw new GatewayError("stream.slow_consumer", "the client reads too slowly; stream ended");
    }
    return Promise.resolve();
  };
  try {
    const principal = session.principal;
    if (principal.exp !== undefined && principal.exp * 1000 <= clock.now()) {
      throw new GatewayError("auth.invalid", "token expired; reconnect with a fresh one");
    }
    const { type: _t, request_id: _r, timestamp_ms: _ts, ...body } = frame;
    const stream = await chat.stream({
      principal,
      request: toCanonical(body, deps.defaultModel, principal.mode),
      record,
      signal: ac.signal,
      trace: ctx,
      transport: "ws",
    });
    await driveStream(stream, v7Sink(stream, send), record, ac.signal);
  } catch (err) {
    if (ac.signal.aborted) {
      // Cancelled before the first token: nothing was produced or charged.
      record.fields.error_code = CANCELLED_CODE;
      session.send({
        type: "chat.complete",
        request_id: id,
        model: record.fields.model ?? null,
        provider: record.fields.provider ?? null,
        finish_reason: "cancelled",
        usage: {
          in_tokens: 0,
          out_tokens: 0,
          tool_calls: 0,
          audio_in_s: 0,
          audio_out_s: 0,
          cost_usd: 0,
        },
      });
      record.end(CLIENT_CLOSED);
      return;
    }
    const error = toGatewayError(err);
    record.fields.error_code = error.code;
    session.send({
      type: "error",
      request_id: id,
      code: error.code,
      message: error.message,
      retryable: error.retryable,
    });
    record.end(error.status);
  } finally {
    session.inflight.delete(id);
  }
}

/** Handles one text frame of a chat (or voice) socket's chat frames. */
export function handleChatFrame(
  deps: ChatSocketDeps,
  session: WsSession,
  frame:
    | { type: "chat.start"; request_id: string; prompt?: string }
    | { type: "chat.cancel"; request_id: string },
  route: string,
): void {
  if (frame.type === "chat.cancel") {
    const ac = session.inflight.get(frame.request_id);
    if (!ac) {
      session.send({
        type: "error",
        request_id: frame.request_id,
        code: "request.invalid",
        message: "no request in flight with that request_id",
        retryable: false,
      });
    } else ac.abort(new Error("cancelled by the client"));
    return;
  }
  const problem = session.inflight.has(frame.request_id)
    ? "a request with that request_id is already in flight"
    : session.usedRequestIds.has(frame.request_id)
    ? "that request_id was already used in this session; each request needs its own"
    : session.inflight.size >= deps.config.ws.max_inflight
    ? `at most ${deps.config.ws.max_inflight} requests may be in flight on one socket`
    : undefined;
  if (problem) {
    session.send({
      type: "error",
      request_id: frame.request_id,
      code: problem.startsWith("at most") ? "quota.exceeded" : "request.invalid",
      message: problem,
      retryable: problem.startsWith("at most"),
    });
    return;
  }
  session.usedRequestIds.add(frame.request_id);
  void runChat(deps, session, frame as ChatStartFrame, route);
}

/** `GET /v1/ws`: chat over WebSocket, several requests in flight, resumable. */
export function chatSocketRoutes(deps: ChatSocketDeps) {
  const app = new Hono<AppEnv>();
  app.get("/ws", (c) =>
    acceptSocket(c, deps, "chat", {
      text(session, _socket, text) {
        const parsed = parseFrame(text, CHAT_FRAMES, deps.config.ws.max_frame_bytes);
        if (!parsed.ok) {
          session.send({ type: "error", ...parsed.error, retryable: false });
          return;
        }
        handleChatFrame(deps, session, parsed.frame, "/v1/ws");
      },
    }));
  return app;
}
