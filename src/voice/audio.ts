/**
 * Audio accounting from the audio itself, never from what a client claims:
 * PCM16 by sample count, Opus by the frame durations in each packet's TOC
 * byte (RFC 6716 §3.1).
 */

export type Codec = "pcm16" | "opus";

/** Seconds of mono 16-bit PCM in `bytes`. */
export function pcm16Seconds(bytes: number, sampleRate: number): number {
  return Math.floor(bytes / 2) / sampleRate;
}

/** Frame duration in ms for each of the 32 TOC configurations. */
const OPUS_FRAME_MS = [
  10,
  20,
  40,
  60,
  10,
  20,
  40,
  60,
  10,
  20,
  40,
  60, // SILK NB, MB, WB
  10,
  20,
  10,
  20, // Hybrid SWB, FB
  2.5,
  5,
  10,
  20,
  2.5,
  5,
  10,
  20,
  2.5,
  5,
  10,
  20,
  2.5,
  5,
  10,
  20, // CELT
];

/** Seconds of audio in one Opus packet, from its TOC byte and frame-count code. */
export function opusPacketSeconds(packet: Uint8Array): number {
  if (packet.length === 0) return 0;
  const toc = packet[0];
  const frameMs = OPUS_FRAME_MS[toc >> 3];
  const code = toc & 0x03;
  let frames: number;
  if (code === 0) frames = 1;
  else if (code === 1 || code === 2) frames = 2;
  else frames = packet.length > 1 ? packet[1] & 0x3f : 0;
  // A packet never carries more than 120 ms (RFC 6716 §3.2.5).
  return Math.min(frames * frameMs, 120) / 1000;
}

export function audioSeconds(codec: Codec, bytes: Uint8Array, sampleRate: number): number {
  return codec === "pcm16" ? pcm16Seconds(bytes.length, sampleRate) : opusPacketSeconds(bytes);
}

/** Linear-interpolation resampling of mono PCM16 (little-endian), for providers with a fixed rate. */
export function resamplePcm16(bytes: Uint8Array, from: number, to: number): Uint8Array {
  if (from === to) return bytes;
  const inView = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const inSamples = Math.floor(bytes.length / 2);
  const outSamples = Math.floor(inSamples * to / from);
  const out = new Uint8Array(outSamples * 2);
  const outView = new DataView(out.buffer);
  for (let i = 0; i < outSamples; i++) {
    const pos = i * from / to;
    const j = Math.floor(pos);
    const frac = pos - j;
    const a = inView.getInt16(Math.min(j, inSamples - 1) * 2, true);
    const b = inView.getInt16(Math.min(j + 1, inSamples - 1) * 2, true);
    outView.setInt16(i * 2, Math.round(a + (b - a) * frac), true);
  }
  return out;
}

export function decodeBase64(text: string): Uint8Array {
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

export function encodeBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}
