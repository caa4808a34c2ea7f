import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  audioSeconds,
  decodeBase64,
  encodeBase64,
  opusPacketSeconds,
  pcm16Seconds,
  resamplePcm16,
} from "../../src/voice/audio.ts";

const near = (actual: number, expected: number, eps = 1e-12) =>
  assert.ok(Math.abs(actual - expected) <= eps, `${actual} is not ${expected}`);

/** An Opus packet: TOC byte (config, stereo flag 0, frame-count code), then `rest`. */
const opus = (config: number, code: number, ...rest: number[]) =>
  new Uint8Array([(config << 3) | code, ...rest]);

/** Mono PCM16 little-endian from sample values. */
function pcm(samples: number[]): Uint8Array {
  const out = new Uint8Array(samples.length * 2);
  const view = new DataView(out.buffer);
  samples.forEach((s, i) => view.setInt16(i * 2, s, true));
  return out;
}

function samplesOf(bytes: Uint8Array): number[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Array.from({ length: bytes.length / 2 }, (_, i) => view.getInt16(i * 2, true));
}

Deno.test("pcm16Seconds counts whole 16-bit samples at the given rate", () => {
  assert.equal(pcm16Seconds(640, 16_000), 0.02);
  assert.equal(pcm16Seconds(32_000, 16_000), 1);
  assert.equal(pcm16Seconds(48_000, 24_000), 1);
  assert.equal(pcm16Seconds(960, 48_000), 0.01);
  assert.equal(pcm16Seconds(16_000, 8_000), 1);
  // A trailing odd byte is not a sample.
  assert.equal(pcm16Seconds(3, 8_000), 1 / 8_000);
  assert.equal(pcm16Seconds(1, 8_000), 0);
  assert.equal(pcm16Seconds(0, 16_000), 0);
});

Deno.test("opusPacketSeconds: frame duration of every SILK, Hybrid and CELT TOC config", () => {
  const expectedMs = [
    // SILK NB, MB, WB
    ...[10, 20, 40, 60],
    ...[10, 20, 40, 60],
    ...[10, 20, 40, 60],
    // Hybrid SWB, FB
    ...[10, 20],
    ...[10, 20],
    // CELT NB, WB, SWB, FB
    ...[2.5, 5, 10, 20],
    ...[2.5, 5, 10, 20],
    ...[2.5, 5, 10, 20],
    ...[2.5, 5, 10, 20],
  ];
  assert.equal(expectedMs.length, 32);
  expectedMs.forEach((ms, config) => {
    near(opusPacketSeconds(opus(config, 0, 0xaa, 0xbb)), ms / 1000);
  });
  // The stereo flag (bit 2) does not change the duration.
  near(opusPacketSeconds(new Uint8Array([(1 << 3) | 0x04, 1, 2])), 0.02);
});

Deno.test("opusPacketSeconds: SILK 10/20/40/60 ms and CELT 2.5/5/10/20 ms single frames", () => {
  near(opusPacketSeconds(opus(0, 0)), 0.01);
  near(opusPacketSeconds(opus(1, 0)), 0.02);
  near(opusPacketSeconds(opus(2, 0)), 0.04);
  near(opusPacketSeconds(opus(3, 0)), 0.06);
  near(opusPacketSeconds(opus(28, 0)), 0.0025);
  near(opusPacketSeconds(opus(29, 0)), 0.005);
  near(opusPacketSeconds(opus(30, 0)), 0.01);
  near(opusPacketSeconds(opus(31, 0)), 0.02);
});

Deno.test("opusPacketSeconds: frame-count codes 0, 1, 2 and 3 (count from byte 1)", () => {
  // code 0: one frame
  near(opusPacketSeconds(opus(1, 0, 9, 9, 9)), 0.02);
  // code 1: two frames of equal size
  near(opusPacketSeconds(opus(1, 1, 9, 9, 9)), 0.04);
  // code 2: two frames of different sizes
  near(opusPacketSeconds(opus(1, 2, 1, 9, 9)), 0.04);
  near(opusPacketSeconds(opus(31, 2, 1, 9)), 0.04);
  // code 3: the frame count is the low 6 bits of byte 1 (VBR and padding flags ignored)
  near(opusPacketSeconds(opus(1, 3, 3)), 0.06);
  near(opusPacketSeconds(opus(1, 3, 0x80 | 0x40 | 3, 0, 0)), 0.06);
  near(opusPacketSeconds(opus(31, 3, 5)), 0.1);
  near(opusPacketSeconds(opus(28, 3, 4)), 0.01);
  // code 3 without its count byte carries nothing countable
  assert.equal(opusPacketSeconds(opus(1, 3)), 0);
  // the payload length never matters
  near(opusPacketSeconds(new Uint8Array([1 << 3, ...new Uint8Array(500)])), 0.02);
});

Deno.test("opusPacketSeconds: a packet is capped at 120 ms; an empty packet is 0", () => {
  near(opusPacketSeconds(opus(3, 1)), 0.12); // 2 × 60 ms: exactly the cap
  near(opusPacketSeconds(opus(3, 3, 2)), 0.12);
  near(opusPacketSeconds(opus(3, 3, 5)), 0.12); // 300 ms claimed
  near(opusPacketSeconds(opus(28, 3, 48)), 0.12); // 48 × 2.5 ms
  near(opusPacketSeconds(opus(28, 3, 63)), 0.12); // 157.5 ms claimed
  near(opusPacketSeconds(opus(31, 3, 63)), 0.12);
  assert.equal(opusPacketSeconds(new Uint8Array()), 0);
});

Deno.test("audioSeconds dispatches on the codec", () => {
  const bytes = new Uint8Array(640);
  bytes[0] = (31 << 3) | 1; // as Opus: 2 × 20 ms
  assert.equal(audioSeconds("pcm16", bytes, 16_000), 0.02);
  assert.equal(audioSeconds("pcm16", bytes, 8_000), 0.04);
  near(audioSeconds("opus", bytes, 48_000), 0.04);
  // Opus durations come from the TOC, never the declared rate
  near(audioSeconds("opus", bytes, 8_000), 0.04);
  assert.equal(audioSeconds("opus", new Uint8Array(), 48_000), 0);
  assert.equal(audioSeconds("pcm16", new Uint8Array(), 48_000), 0);
});

Deno.test("resamplePcm16 16 kHz → 24 kHz: 3/2 the samples, interpolated along a ramp", () => {
  const n = 1_000;
  const input = pcm(Array.from({ length: n }, (_, i) => i * 10 - 5_000));
  const out = resamplePcm16(input, 16_000, 24_000);
  assert.equal(out.length, Math.floor(n * 24_000 / 16_000) * 2);
  assert.equal(out.length / input.length, 1.5);
  // same duration on both sides
  assert.equal(pcm16Seconds(out.length, 24_000), pcm16Seconds(input.length, 16_000));
  const s = samplesOf(out);
  assert.equal(s[0], -5_000);
  for (let i = 0; i < s.length; i++) {
    const pos = i * 16_000 / 24_000;
    if (Math.floor(pos) + 1 < n) {
      // linear interpolation on a ramp lands on the ramp
      assert.ok(Math.abs(s[i] - (pos * 10 - 5_000)) <= 0.5, `sample ${i}: ${s[i]}`);
    }
    if (i > 0) {
      const step = s[i] - s[i - 1];
      assert.ok(step >= 0 && step <= 10, `step at ${i} is ${step}`); // monotone, no jumps
    }
  }
  // the tail holds the last input sample rather than reading past the end
  assert.equal(s[s.length - 1], (n - 1) * 10 - 5_000);
});

Deno.test("resamplePcm16 reads a view at an odd byte offset and clamps extremes", () => {
  const backing = new Uint8Array(1 + 8);
  backing.set(pcm([32_767, -32_768, 32_767, -32_768]), 1);
  const view = backing.subarray(1);
  const out = resamplePcm16(view, 8_000, 16_000);
  assert.equal(out.length, 16);
  const s = samplesOf(out);
  assert.deepEqual([s[0], s[2], s[4], s[6]], [32_767, -32_768, 32_767, -32_768]);
  for (const v of s) assert.ok(v >= -32_768 && v <= 32_767);
  assert.equal(resamplePcm16(new Uint8Array(), 16_000, 24_000).length, 0);
});

Deno.test("resamplePcm16 downsamples 48 kHz → 24 kHz by taking every other sample", () => {
  const input = pcm([0, 1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual(samplesOf(resamplePcm16(input, 48_000, 24_000)), [0, 2, 4, 6]);
});

Deno.test("resamplePcm16 is the identity when the rates are equal", () => {
  const input = pcm([1, -2, 3, -4, 5]);
  assert.equal(resamplePcm16(input, 24_000, 24_000), input);
  assert.equal(resamplePcm16(input, 16_000, 16_000), input);
});

Deno.test("base64 round trip, small and larger than one 32 KiB encoding slice", () => {
  assert.equal(encodeBase64(new TextEncoder().encode("hello")), "aGVsbG8=");
  assert.deepEqual(decodeBase64("aGVsbG8="), new TextEncoder().encode("hello"));
  assert.equal(encodeBase64(new Uint8Array()), "");
  assert.deepEqual(decodeBase64(""), new Uint8Array());
  for (const size of [1, 2, 3, 0x8000 - 1, 0x8000, 0x8000 + 1, 100_003]) {
    const bytes = new Uint8Array(size);
    for (let i = 0; i < size; i++) bytes[i] = (i * 131 + (i >> 8)) & 0xff;
    const text = encodeBase64(bytes);
    assert.equal(text, Buffer.from(bytes).toString("base64"), `size ${size}`);
    assert.deepEqual(decodeBase64(text), bytes, `size ${size}`);
  }
});
