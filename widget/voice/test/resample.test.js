import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Downsampler, levelDb } from '../src/resample.js';

function sine(rate, freq, seconds, amplitude = 0.5) {
  const out = new Float32Array(Math.round(rate * seconds));
  for (let i = 0; i < out.length; i += 1) out[i] = amplitude * Math.sin((2 * Math.PI * freq * i) / rate);
  return out;
}

function pushInBlocks(down, samples, block = 128) {
  const frames = [];
  for (let i = 0; i < samples.length; i += block) frames.push(...down.push(samples.subarray(i, i + block)));
  return frames;
}

function peak(frames) {
  let max = 0;
  for (const f of frames) for (const v of f) max = Math.max(max, Math.abs(v));
  return max / 32768;
}

test('48 kHz in 128-sample render quanta gives 50 frames of 320 samples per second', () => {
  const frames = pushInBlocks(new Downsampler(48000), sine(48000, 440, 1));
  assert.equal(frames.length, 50);
  assert.ok(frames.every((f) => f instanceof Int16Array && f.length === 320));
});

test('a non-integer ratio (44.1 kHz) keeps the output rate at 16 kHz', () => {
  const down = new Downsampler(44100, 16000, 160);
  const frames = pushInBlocks(down, sine(44100, 300, 3));
  const samples = frames.length * 160 + down.filled;
  assert.ok(Math.abs(samples - 48000) <= 1, `got ${samples} samples for 3 s`);
});

test('speech-band tones pass and the pitch is preserved', () => {
  const frames = pushInBlocks(new Downsampler(48000), sine(48000, 1000, 1));
  assert.ok(peak(frames) > 0.45, `1 kHz peak ${peak(frames)}`);
  const pcm = Int16Array.from(frames.flatMap((f) => Array.from(f)));
  let crossings = 0;
  for (let i = 1; i < pcm.length; i += 1) if ((pcm[i - 1] < 0) !== (pcm[i] < 0)) crossings += 1;
  assert.ok(Math.abs(crossings - 2000) <= 4, `${crossings} zero crossings for 1 kHz over 1 s`);
});

test('tones above the 8 kHz Nyquist limit are attenuated, not folded back at full level', () => {
  const frames = pushInBlocks(new Downsampler(48000), sine(48000, 12000, 1));
  assert.ok(peak(frames) < 0.2, `12 kHz leaked with peak ${peak(frames)} of 0.5`);
});

test('samples beyond full scale are clipped to the PCM16 range', () => {
  const frames = new Downsampler(16000, 16000, 4).push(Float32Array.from([2, -2, 1, -1]));
  assert.deepEqual(Array.from(frames[0]), [32767, -32768, 32767, -32768]);
});

test('levelDb reports full scale near 0 dB and digital silence as -100', () => {
  const loud = Int16Array.from({ length: 320 }, (_, i) => (i % 2 ? 32767 : -32768));
  assert.ok(levelDb(loud) > -0.1);
  assert.equal(levelDb(new Int16Array(320)), -100);
});
