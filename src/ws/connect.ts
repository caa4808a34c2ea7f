import type { Context } from "hono";
import { bearerToken } from "../auth/middleware.ts";
import type { Principal } from "../auth/principal.ts";
import type { TokenService } from "../auth/tokens.ts";
import type { Clock } from "../clock.ts";
import type { Config } from "../config.ts";
import { GatewayError } from "../errors.ts";
import type { Logger } from "../obs/log.ts";
import type { Metrics } from "../obs/metrics.ts";
import type { AppEnv } from "../api/context.ts";
import type { SessionRegistry, WsSession } from "./session.ts";

/** The subprotocol the gateway speaks; browsers send the token beside it as `bearer.<jwt>`. */
export const SUBPROTOCOL = "convergio.v1";

export interface SocketDeps {
  config: Config;
  tokens: TokenService;
  sessions: SessionRegistry;
  clock: Clock;
  metrics: Metrics;
  log: Logger;
}

export interface SocketHandlers {
  /** A text frame; binary frames are a protocol violation unless `binary` is set. */
  text(session: WsSession, socket: WebSocket, text: string): void;
  /** Right after `session.ready`. */
  ready?(session: WsSession, resumed: boolean): void;
}

function tokenOf(c: Context<AppEnv>, protocols: string[]): string | undefined {
  return bearerToken(c.req.header("authorization")) ??
    protocols.find((p) => p.startsWith("bearer."))?.slice("bearer.".length);
}

/**
 * Accepts a WebSocket: checks the JWT before upgrading (header, or a
 * `bearer.<jwt>` subprotocol for browsers), creates or resumes the session,
 * upgrades with pings, and wires close handling, dropouts and idle timeouts.
 */
export async function acceptSocket(
  c: Context<AppEnv>,
  deps: SocketDeps,
  kind: WsSession["kind"],
  handlers: SocketHandlers,
): Promise<Response> {
  const { config, sessions, clock, metrics } = deps;
  if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
    throw new GatewayError("request.invalid", "this endpoint needs a WebSocket upgrade", {
      status: 426,
    });
  }
  const protocols = (c.req.header("sec-websocket-protocol") ?? "").split(",").map((p) => p.trim())
    .filter(Boolean);
  const token = tokenOf(c, protocols);
  if (!token) throw new GatewayError("auth.invalid", "missing bearer token");
  const principal: Principal = await deps.tokens.verify(token);
  c.get("record").identify(principal);
  if (protocols.length && !protocols.includes(SUBPROTOCOL)) {
    throw new GatewayError("request.invalid", `offer the ${SUBPROTOCOL} subprotocol`);
  }

  const resumeId = c.req.query("session_id");
  const lastEventId = c.req.query("last_event_id");
  let session: WsSession | undefined;
  if (resumeId) {
    metrics.wsReconnectAttempts.inc({ kind });
    session = sessions.find(resumeId, kind, principal);
    if (!session) {
      throw new GatewayError(
        "session.expired",
        "that session has ended or is not yours; start a new one",
      );
    }
    session.reconnects++;
  } else {
    session = sessions.create(kind, principal);
    metrics.wsSessions.inc({ kind });
  }
  const s = session;
  const started = c.get("record").startedAtMs;
  const { socket, response } = Deno.upgradeWebSocket(c.req.raw, {
    protocol: protocols.includes(SUBPROTOCOL) ? SUBPROTOCOL : undefined,
    idleTimeout: config.ws.ping_timeout_s,
  });

  const idle = setInterval(() => {
    if (s.inflight.size === 0 && clock.now() - s.lastActivity > config.ws.idle_timeout_ms) {
      socket.close(1000, "idle timeout");
    }
  }, Math.min(config.ws.idle_timeout_ms, 30_000));

  socket.onopen = () => {
    // A resume without last_event_id replays everything still kept.
    const complete = s.attach(
      socket,
      resumeId === undefined ? undefined : Number(lastEventId ?? 0) || 0,
    );
    const resumed = resumeId !== undefined;
    if (resumed && complete) metrics.wsReconnectSuccesses.inc({ kind });
    s.send({
      type: "session.ready",
      session_id: s.id,
      resumed,
      ...(resumed && !complete ? { frames_lost: true } : {}),
      resume_window_ms: config.ws.resume_window_ms,
    });
    metrics.wsConnect.observe({ kind }, (clock.now() - started) / 1000);
    handlers.ready?.(s, resumed);
  };
  socket.onmessage = (e) => {
    s.lastActivity = clock.now();
    if (typeof e.data !== "string") {
      s.send({
        type: "error",
        code: "request.invalid",
        message: "binary frames are not part of this protocol; closing",
        retryable: false,
      });
      socket.close(1003, "binary frames are not supported");
      return;
    }
    try {
      handlers.text(s, socket, e.data);
    } catch (err) {
      // A frame must never take the process down; say what happened instead.
      deps.log.error("websocket frame handler failed", { session_id: s.id, error: String(err) });
      s.send({ type: "error", code: "internal", message: "internal error", retryable: true });
    }
  };
  socket.onclose = (e) => {
    clearInterval(idle);
    const normal = e.code === 1000 || e.code === 1001;
    if (!normal) {
      metrics.wsDropouts.inc({
        kind,
        reason: e.code === 1006 || e.code === 0 ? "abnormal_1006" : String(e.code),
      });
    }
    // A socket the session already left (it resumed elsewhere) changes nothing.
    if (!s.isCurrent(socket)) return;
    // A clean goodbye ends the session; anything else waits for a resume.
    if (normal) s.end();
    else s.detach(socket);
  };
  socket.onerror = () => {};
  return response;
}
