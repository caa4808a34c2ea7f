import type { Principal } from "../auth/principal.ts";
import type { Clock } from "../clock.ts";

/** A frame the server sends: the transport adds `event_id` and `timestamp_ms`. */
export interface ServerFrame {
  type: string;
  request_id?: string;
  [key: string]: unknown;
}

export interface SessionLimits {
  replayFrames: number;
  maxBufferedBytes: number;
  resumeWindowMs: number;
}

/**
 * One client's WebSocket session. It outlives a dropped socket for the resume
 * window: frames keep their increasing `event_id`, the last ones are kept,
 * and a client that comes back with its last `event_id` gets what it missed.
 */
export class WsSession {
  readonly id = `wss_${crypto.randomUUID().replaceAll("-", "")}`;
  /** In-flight requests by client request id; aborting one cancels it upstream. */
  readonly inflight = new Map<string, AbortController>();
  /** Reconnects so far, for the voice "switch to text" advice. */
  reconnects = 0;
  lastActivity: number;
  #eventId = 0;
  #replay: Array<{ id: number; text: string }> = [];
  #socket?: WebSocket;
  #expiry?: ReturnType<typeof setTimeout>;
  #ended = false;

  constructor(
    readonly kind: "chat" | "voice",
    readonly principal: Principal,
    private readonly limits: SessionLimits,
    private readonly clock: Clock,
    private readonly onEnd: (s: WsSession) => void,
  ) {
    this.lastActivity = clock.now();
  }

  get attached(): boolean {
    return this.#socket !== undefined;
  }

  /** Whether `socket` is the one this session currently speaks on (not one it left). */
  isCurrent(socket: WebSocket): boolean {
    return this.#socket === socket;
  }

  /** Client request ids already used in this session: each names one request. */
  readonly usedRequestIds = new Set<string>();

  get ended(): boolean {
    return this.#ended;
  }

  /**
   * Sends (or, while detached, keeps) a frame. Returns false when the reader
   * is too slow: unsent bytes passed the limit, so its streams must end.
   */
  send(frame: ServerFrame): boolean {
    const id = ++this.#eventId;
    const text = JSON.stringify({ ...frame, event_id: id, timestamp_ms: this.clock.now() });
    this.#replay.push({ id, text });
    if (this.#replay.length > this.limits.replayFrames) this.#replay.shift();
    const socket = this.#socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return true;
    // Errors still go out: the client must learn why its stream ended.
    if (socket.bufferedAmount > this.limits.maxBufferedBytes && frame.type !== "error") {
      return false;
    }
    socket.send(text);
    return true;
  }

  /** Attaches a socket, replaying frames after `lastEventId`; false when some were lost. */
  attach(socket: WebSocket, lastEventId?: number): boolean {
    clearTimeout(this.#expiry);
    this.#socket = socket;
    this.lastActivity = this.clock.now();
    if (lastEventId === undefined) return true;
    const first = this.#replay[0]?.id ?? this.#eventId + 1;
    const complete = lastEventId >= first - 1;
    for (const f of this.#replay) if (f.id > lastEventId) socket.send(f.text);
    return complete;
  }

  /** The socket went away: wait for a resume, then end. */
  detach(socket: WebSocket): void {
    if (this.#socket !== socket) return;
    this.#socket = undefined;
    clearTimeout(this.#expiry);
    this.#expiry = setTimeout(() => this.end(), this.limits.resumeWindowMs);
  }

  /** Ends the session: cancels what is in flight (which settles it) and forgets it. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    clearTimeout(this.#expiry);
    for (const ac of this.inflight.values()) ac.abort(new Error("session ended"));
    this.onEnd(this);
  }
}

/** Live sessions of this edge, for resume. Resume is per edge: route a session's reconnects to it. */
export class SessionRegistry {
  readonly #sessions = new Map<string, WsSession>();

  constructor(private readonly limits: SessionLimits, private readonly clock: Clock) {}

  create(kind: WsSession["kind"], principal: Principal): WsSession {
    const s = new WsSession(
      kind,
      principal,
      this.limits,
      this.clock,
      (x) => this.#sessions.delete(x.id),
    );
    this.#sessions.set(s.id, s);
    return s;
  }

  /** The caller's own live session, or undefined: another user's id never resumes. */
  find(id: string, kind: WsSession["kind"], principal: Principal): WsSession | undefined {
    const s = this.#sessions.get(id);
    if (!s || s.ended || s.kind !== kind) return undefined;
    const p = s.principal;
    return p.tenant_id === principal.tenant_id && p.user_id === principal.user_id ? s : undefined;
  }

  get size(): number {
    return this.#sessions.size;
  }

  /** Live sessions of one kind, attached or waiting for a resume. */
  count(kind: WsSession["kind"]): number {
    let n = 0;
    for (const s of this.#sessions.values()) if (s.kind === kind) n++;
    return n;
  }

  /** Ends every session and waits (bounded) for their cancelled requests to settle. */
  async endAll(timeoutMs = 5_000): Promise<void> {
    const all = [...this.#sessions.values()];
    for (const s of all) s.end();
    const deadline = Date.now() + timeoutMs;
    while (all.some((s) => s.inflight.size) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}
