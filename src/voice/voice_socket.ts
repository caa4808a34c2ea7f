import { own } from "../record.ts";
import type { ControlView } from "../control/view.ts";
import { Hono } from "hono";
import type { AppEnv } from "../api/context.ts";
import type { Admission, Guard } from "../budget/guard.ts";
import { CLIENT_CLOSED, GatewayError, toGatewayError } from "../errors.ts";
import { costUsd } from "../metering/pricing.ts";
import { beginRequest } from "../obs/request_scope.ts";
import type { TokenUsage } from "../providers/types.ts";
import { type ChatSocketDeps, handleChatFrame } from "../ws/chat_socket.ts";
import { acceptSocket } from "../ws/connect.ts";
import { parseFrame, VOICE_FRAMES, type VoiceStartFrame } from "../ws/frames.ts";
import type { WsSession } from "../ws/session.ts";
import { audioSeconds, decodeBase64, encodeBase64, pcm16Seconds, resamplePcm16 } from "./audio.ts";
import type { RealtimeAdapter, RealtimeSession } from "./types.ts";

export interface VoiceSocketDeps extends ChatSocketDeps {
  guard: Guard;
  /** voice_mode flag and the RB-4 mitigations. */
  control: ControlView;
  realtime: Record<string, RealtimeAdapter>;
}

const ROUTE = "/v1/voice/ws";
/** How long voice.stop waits for the provider to finish answering the last turn. */
const STOP_GRACE_MS = 30_000;

/**
 * One voice request, from `voice.start` to `voice.complete`: guarded like
 * chat, relayed to the first realtime provider that answers (the next on
 * failure, transcript-only when none does), metered from sample counts.
 */
class VoiceRequest {
  readonly ac = new AbortController();
  #provider?: { name: string; session: RealtimeSession; adapter: RealtimeAdapter };
  #tried = 0;
  #admission?: Admission;
  #usage: TokenUsage = { input_tokens: 0, output_tokens: 0 };
  #audioIn = 0;
  #audioOut = 0;
  /** Caller audio since the provider last finished a turn: a turn is still owed. */
  #sinceTurn = 0;
  #turnDone?: () => void;
  /** Whether this turn's answer has begun, and when the caller last spoke. */
  #answering = false;
  #lastAudioAt?: number;
  #finished = false;
  #stopping?: Promise<void>;
  readonly scope;

  constructor(
    private readonly deps: VoiceSocketDeps,
    private readonly session: WsSession,
    readonly frame: VoiceStartFrame,
  ) {
    this.scope = beginRequest({
      requestId: `${session.id}:${frame.request_id}`,
      method: "WS",
      route: ROUTE,
      headers: new Headers(),
      clock: deps.clock,
      tracer: deps.tracer,
      onEnd: deps.report,
    });
    const r = this.scope.record;
    r.metered = true;
    r.identify(session.principal);
    r.fields.session_id = session.id;
    r.fields.model = deps.config.voice.model;
    r.defer();
  }

  #send(type: string, data: Record<string, unknown> = {}) {
    this.session.send({ type, request_id: this.frame.request_id, ...data });
  }

  async start(): Promise<void> {
    const { config, guard } = this.deps;
    const p = this.session.principal;
    const lane = this.frame.lane ?? p.mode;
    if (lane !== p.mode) {
      throw new GatewayError("request.invalid", `lane: this token is for the ${p.mode} lane`, {
        param: "lane",
      });
    }
    const alias = config.voice.model;
    const keyed = config.models[alias].deployments.filter((d) =>
      !this.deps.realtime[d.provider].needsKey || this.#apiKey(d.provider)
    );
    if (keyed.length === 0) {
      throw p.mode === "byok"
        ? new GatewayError(
          "byok.missing_key",
          `tenant ${p.tenant_id} has no provider key for ${alias}`,
        )
        : new GatewayError("provider.unavailable", `no house key configured for ${alias}`);
    }
    this.#admission = await guard.admit(
      p,
      { model: alias, messages: [{ role: "user", content: "" }] },
      alias,
    );
    await this.#openNext();
  }

  /** Opens the next deployment that takes this codec; transcript-only when none is left. */
  async #openNext(reason?: string): Promise<void> {
    const { config, realtime, metrics } = this.deps;
    const deployments = config.models[config.voice.model].deployments;
    while (this.#tried < deployments.length && !this.ac.signal.aborted) {
      const d = deployments[this.#tried++];
      const adapter = realtime[d.provider];
      if (adapter.needsKey && !this.#apiKey(d.provider)) {
        reason = `${d.provider} has no key for this lane`;
        continue;
      }
      if (!adapter.codecs.includes(this.frame.codec)) {
        reason = `${d.provider} does not take ${this.frame.codec}`;
        continue;
      }
      try {
        const session = await adapter.open({
          model: d.model,
          codec: this.frame.codec,
          sampleRate: adapter.inputRate ?? this.frame.sample_rate,
          // RB-4's push_to_talk: no server turn detection; the client's voice.stop ends a turn.
          vad: this.frame.mode === "vad" && !this.deps.control.mitigation("push_to_talk"),
          apiKey: this.#apiKey(d.provider),
          signal: this.ac.signal,
        });
        if (this.ac.signal.aborted) {
          // The request ended while this provider was connecting.
          session.close();
          return;
        }
        metrics.providerAttempts.inc({ provider: d.provider, deployment: d.model, outcome: "ok" });
        this.#provider = { name: d.provider, session, adapter };
        this.scope.record.fields.provider = d.provider;
        this.#send("voice.ready", {
          provider: d.provider,
          mode: this.frame.mode,
          output: { codec: "pcm16", sample_rate: 24_000 },
        });
        void this.#pump(session);
        return;
      } catch (err) {
        if (this.ac.signal.aborted) return;
        metrics.providerAttempts.inc({
          provider: d.provider,
          deployment: d.model,
          outcome: "error",
        });
        if (this.#tried < deployments.length) {
          metrics.providerFailovers.inc({ provider: d.provider, deployment: d.model });
        }
        reason = (err as Error).message;
      }
    }
    if (this.ac.signal.aborted) return;
    this.#provider = undefined;
    this.#send("voice.degraded", {
      mode: "transcript-only",
      reason:
        `no voice provider is available (${reason}); send voice.transcript frames for text answers`,
    });
    this.#turnDone?.();
  }

  #apiKey(provider: string): string | undefined {
    const p = this.session.principal;
    const cfg = this.deps.config;
    const secret = p.mode === "byok"
      ? own(cfg.tenants, p.tenant_id)?.byok_keys[provider]
      : (cfg.providers[provider] as { api_key?: { reveal(): string } }).api_key;
    return secret?.reveal();
  }

  async #pump(session: RealtimeSession): Promise<void> {
    const { metrics, clock } = this.deps;
    try {
      for await (const ev of session.events) {
        if (!this.#answering && ev.type !== "transcript.user" && ev.type !== "turn.done") {
          // First-token latency of a voice turn runs from the end of the
          // caller's speech, not from voice.start: speaking time is not ours.
          this.#answering = true;
          const ttft = clock.now() - (this.#lastAudioAt ?? this.scope.record.startedAtMs);
          this.scope.record.ttftMs ??= ttft;
          metrics.timeToFirstToken.observe({
            gen_ai_provider_name: this.#provider?.name ?? "none",
            gen_ai_request_model: this.deps.config.voice.model,
            transport: "ws-voice",
          }, ttft / 1000);
        }
        if (ev.type === "audio") {
          const seconds = pcm16Seconds(ev.pcm16.length, ev.sampleRate);
          this.#audioOut += seconds;
          metrics.audioSeconds.inc({ direction: "out" }, seconds);
          this.#send("voice.audio", {
            bytes_base64: encodeBase64(ev.pcm16),
            sample_rate: ev.sampleRate,
          });
        } else if (ev.type === "turn.done") {
          this.#usage.input_tokens += ev.usage.input_tokens;
          this.#usage.output_tokens += ev.usage.output_tokens;
          this.#send("voice.turn", { usage: ev.usage });
          this.#sinceTurn = 0;
          this.#answering = false;
          this.#turnDone?.();
        } else {
          this.#send("voice.transcript", {
            role: ev.type === "transcript.user" ? "user" : "assistant",
            text: ev.text,
          });
        }
      }
    } catch (err) {
      if (this.ac.signal.aborted || session !== this.#provider?.session) return;
      // The provider failed mid-session: the next one takes the following audio.
      this.#send("voice.degraded", { mode: "failover", reason: (err as Error).message });
      await this.#openNext((err as Error).message);
      // The caller's unanswered audio went down with the failed provider: a
      // pending voice.stop has nothing left to wait for.
      this.#sinceTurn = 0;
      this.#turnDone?.();
    }
  }

  chunk(base64: string): void {
    if (this.#finished || this.#stopping) return;
    let bytes: Uint8Array;
    try {
      bytes = decodeBase64(base64);
    } catch {
      this.#send("error", {
        code: "request.invalid",
        message: "bytes_base64: not valid base64",
        retryable: false,
      });
      return;
    }
    const seconds = audioSeconds(this.frame.codec, bytes, this.frame.sample_rate);
    const max = this.deps.config.voice.max_audio_seconds;
    if (this.#audioIn + seconds > max) {
      this.#send("error", {
        code: "quota.exceeded",
        message: `max audio length of ${max} s reached; the request ends here`,
        retryable: false,
      });
      void this.stop();
      return;
    }
    this.#audioIn += seconds;
    this.deps.metrics.audioSeconds.inc({ direction: "in" }, seconds);
    const p = this.#provider;
    if (!p) return;
    const audio = this.frame.codec === "pcm16" && p.adapter.inputRate
      ? resamplePcm16(bytes, this.frame.sample_rate, p.adapter.inputRate)
      : bytes;
    p.session.append(audio, seconds);
    this.#sinceTurn += seconds;
    this.#lastAudioAt = this.deps.clock.now();
  }

  /** Ends the caller's input: the last turn is answered, then the request completes. */
  stop(): Promise<void> {
    return this.#stopping ??= this.#stop();
  }

  async #stop(): Promise<void> {
    if (this.#finished) return;
    const p = this.#provider;
    if (p && this.#sinceTurn > 0) {
      const answered = new Promise<void>((resolve) => (this.#turnDone = resolve));
      p.session.commit();
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([answered, new Promise((r) => (timer = setTimeout(r, STOP_GRACE_MS)))]);
      clearTimeout(timer);
    }
    this.finish(200);
  }

  finish(status: number, error?: GatewayError): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#provider?.session.close();
    this.ac.abort(new Error("voice request finished"));
    const { config, metrics } = this.deps;
    const r = this.scope.record;
    const model = config.models[config.voice.model];
    r.fields.input_tokens = this.#usage.input_tokens;
    r.fields.output_tokens = this.#usage.output_tokens;
    r.fields.audio_seconds_in = round3(this.#audioIn);
    r.fields.audio_seconds_out = round3(this.#audioOut);
    r.fields.cost_usd = costUsd(model.price, this.#usage);
    this.#admission?.settle(this.#usage);
    metrics.tokenUsage.observe({
      gen_ai_token_type: "input",
      gen_ai_provider_name: this.#provider?.name ?? "none",
      gen_ai_request_model: config.voice.model,
    }, this.#usage.input_tokens);
    metrics.tokenUsage.observe({
      gen_ai_token_type: "output",
      gen_ai_provider_name: this.#provider?.name ?? "none",
      gen_ai_request_model: config.voice.model,
    }, this.#usage.output_tokens);
    const usage = {
      in_tokens: this.#usage.input_tokens,
      out_tokens: this.#usage.output_tokens,
      tool_calls: 0,
      audio_in_s: r.fields.audio_seconds_in,
      audio_out_s: r.fields.audio_seconds_out,
      cost_usd: r.fields.cost_usd,
    };
    if (error) {
      r.fields.error_code = error.code;
      this.#send("error", {
        code: error.code,
        message: error.message,
        retryable: error.retryable,
        usage,
      });
    } else {
      this.#send("voice.complete", { usage });
    }
    r.end(status);
  }
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;

/** `GET /v1/voice/ws`: voice sessions relayed to realtime providers, with text fallbacks. */
export function voiceSocketRoutes(deps: VoiceSocketDeps) {
  const app = new Hono<AppEnv>();
  const active = new WeakMap<WsSession, VoiceRequest>();

  app.get("/voice/ws", (c) =>
    acceptSocket(c, deps, "voice", {
      ready(session, resumed) {
        if (resumed && session.reconnects >= deps.config.voice.reconnects_before_text) {
          session.send({
            type: "voice.degraded",
            mode: "text-only",
            reason: `this session reconnected ${session.reconnects} times; switch to text`,
          });
        }
      },
      text(session, _socket, text) {
        const parsed = parseFrame(text, VOICE_FRAMES, deps.config.ws.max_frame_bytes);
        if (!parsed.ok) {
          session.send({ type: "error", ...parsed.error, retryable: false });
          return;
        }
        const frame = parsed.frame;
        const current = active.get(session);
        const problem = (message: string, code = "request.invalid") =>
          session.send({
            type: "error",
            request_id: frame.request_id,
            code,
            message,
            retryable: false,
          });
        switch (frame.type) {
          case "chat.start":
          case "chat.cancel":
            handleChatFrame(deps, session, frame, ROUTE);
            return;
          case "voice.transcript":
            // A transcript is a text turn: the chat path, with its checks.
            handleChatFrame(
              deps,
              session,
              { type: "chat.start", request_id: frame.request_id, prompt: frame.text },
              ROUTE,
            );
            return;
          case "voice.start": {
            if (current) return problem("a voice request is already active on this socket");
            if (session.usedRequestIds.has(frame.request_id)) {
              return problem("that request_id was already used in this session");
            }
            session.usedRequestIds.add(frame.request_id);
            const mode = deps.control.flag("voice_mode", session.principal.tenant_id);
            if (mode === "off") {
              return problem("voice is disabled for this tenant", "feature.disabled");
            }
            if (mode === "text-only" || deps.control.mitigation("voice_text")) {
              session.send({
                type: "voice.degraded",
                request_id: frame.request_id,
                mode: "text-only",
                reason: "voice is text-only for now; send voice.transcript or chat.start",
              });
              return;
            }
            if (frame.mode === "vad" && deps.control.mitigation("push_to_talk")) {
              session.send({
                type: "voice.degraded",
                request_id: frame.request_id,
                mode: "push-to-talk",
                reason: "turn detection is off for now; send voice.stop to end each turn",
              });
            }
            const req = new VoiceRequest(deps, session, frame);
            active.set(session, req);
            session.inflight.set(frame.request_id, req.ac);
            req.ac.signal.addEventListener("abort", () => {
              req.finish(
                CLIENT_CLOSED,
                new GatewayError("request.invalid", "voice request cancelled", {
                  status: CLIENT_CLOSED,
                }),
              );
            }, { once: true });
            req.start().catch((err) => {
              const error = toGatewayError(err);
              req.finish(error.status, error);
            });
            req.ac.signal.addEventListener("abort", () => {
              active.delete(session);
              session.inflight.delete(frame.request_id);
            }, { once: true });
            return;
          }
          case "voice.chunk":
          case "voice.stop":
            if (!current || current.frame.request_id !== frame.request_id) {
              return problem("no active voice request with that request_id");
            }
            if (frame.type === "voice.chunk") current.chunk(frame.bytes_base64);
            else void current.stop();
            return;
        }
      },
    }));
  return app;
}
