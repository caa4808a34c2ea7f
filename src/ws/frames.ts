import { z } from "zod";
import { ModeSchema } from "../config.ts";
import { MessageSchema, ToolChoiceSchema, ToolSchema } from "../providers/chat_schema.ts";

/** Every client frame names its request; ids are the client's, unique within its session. */
const RequestId = z.string().min(1).max(128).regex(/^[A-Za-z0-9._:-]+$/, "must be [A-Za-z0-9._:-]");

export const ChatStartFrame = z.strictObject({
  type: z.literal("chat.start"),
  request_id: RequestId,
  timestamp_ms: z.number().optional(),
  prompt: z.string().min(1).optional(),
  messages: z.array(MessageSchema).min(1).optional(),
  mode: ModeSchema.optional(),
  model_hint: z.string().min(1).optional(),
  max_tokens: z.number().int().positive().optional(),
  temperature: z.number().min(0).max(2).optional(),
  tools: z.array(ToolSchema).optional(),
  tool_choice: ToolChoiceSchema.optional(),
}).refine((f) => (f.prompt === undefined) !== (f.messages === undefined), {
  message: "give exactly one of prompt or messages",
  path: ["prompt"],
});
export type ChatStartFrame = z.infer<typeof ChatStartFrame>;

export const ChatCancelFrame = z.strictObject({
  type: z.literal("chat.cancel"),
  request_id: RequestId,
  timestamp_ms: z.number().optional(),
});

export const VoiceStartFrame = z.strictObject({
  type: z.literal("voice.start"),
  request_id: RequestId,
  timestamp_ms: z.number().optional(),
  codec: z.enum(["pcm16", "opus"]),
  sample_rate: z.number().int().refine((r) => [8000, 16000, 24000, 48000].includes(r), {
    message: "sample_rate must be 8000, 16000, 24000 or 48000",
  }),
  /** vad: the provider detects turns; push-to-talk: the turn ends at voice.stop. */
  mode: z.enum(["vad", "push-to-talk"]).default("vad"),
  lane: ModeSchema.optional(),
  model_hint: z.string().min(1).optional(),
});
export type VoiceStartFrame = z.infer<typeof VoiceStartFrame>;

export const VoiceChunkFrame = z.strictObject({
  type: z.literal("voice.chunk"),
  request_id: RequestId,
  timestamp_ms: z.number().optional(),
  bytes_base64: z.string().min(1).regex(/^[A-Za-z0-9+/]+={0,2}$/, "must be base64"),
});

export const VoiceStopFrame = z.strictObject({
  type: z.literal("voice.stop"),
  request_id: RequestId,
  timestamp_ms: z.number().optional(),
});

/** Transcript-only mode: the client's own speech recognition sends text. */
export const VoiceTranscriptFrame = z.strictObject({
  type: z.literal("voice.transcript"),
  request_id: RequestId,
  timestamp_ms: z.number().optional(),
  text: z.string().min(1).max(20_000),
});

export const CHAT_FRAMES = {
  "chat.start": ChatStartFrame,
  "chat.cancel": ChatCancelFrame,
} as const;

export const VOICE_FRAMES = {
  ...CHAT_FRAMES,
  "voice.start": VoiceStartFrame,
  "voice.chunk": VoiceChunkFrame,
  "voice.stop": VoiceStopFrame,
  "voice.transcript": VoiceTranscriptFrame,
} as const;

export type FrameError = { code: "request.invalid"; message: string; request_id?: string };

/**
 * Parses one text frame against the frame types a socket accepts. Problems
 * come back as a `request.invalid` description, never a throw, so one bad
 * frame cannot take the socket down.
 */
export function parseFrame<T extends Record<string, z.ZodType>>(
  text: string,
  accepted: T,
  maxBytes: number,
): { ok: true; frame: z.infer<T[keyof T]> } | { ok: false; error: FrameError } {
  // Characters undercount UTF-8 bytes up to threefold: encode only when it could matter.
  if (
    text.length > maxBytes ||
    (text.length * 3 > maxBytes && new TextEncoder().encode(text).byteLength > maxBytes)
  ) {
    return {
      ok: false,
      error: { code: "request.invalid", message: `frame exceeds ${maxBytes} bytes` },
    };
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return { ok: false, error: { code: "request.invalid", message: "frame is not valid JSON" } };
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    return {
      ok: false,
      error: { code: "request.invalid", message: "frame must be a JSON object" },
    };
  }
  const obj = raw as Record<string, unknown>;
  const requestId = typeof obj.request_id === "string" ? obj.request_id : undefined;
  // Own keys only: "toString" or "constructor" must not find an inherited method.
  const schema = typeof obj.type === "string" && Object.hasOwn(accepted, obj.type)
    ? accepted[obj.type]
    : undefined;
  if (!schema) {
    return {
      ok: false,
      error: {
        code: "request.invalid",
        message: `type: unknown frame type ${JSON.stringify(obj.type)}; expected one of ${
          Object.keys(accepted).join(", ")
        }`,
        request_id: requestId,
      },
    };
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return {
      ok: false,
      error: {
        code: "request.invalid",
        message: `${issue.path.join(".") || obj.type}: ${issue.message}`,
        request_id: requestId,
      },
    };
  }
  return { ok: true, frame: parsed.data as z.infer<T[keyof T]> };
}
