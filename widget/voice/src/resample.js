// Microphone samples -> 16 kHz PCM16 frames. Runs inside the AudioWorklet, so the class must stay
// self-contained: worklet.js ships its source text (Function.prototype.toString) to the audio thread.

/** Streaming box-filter downsampler emitting fixed-size Int16 frames. */
export class Downsampler {
  constructor(inputRate, outputRate = 16000, frameSamples = 320) {
    if (!(inputRate >= outputRate)) throw new RangeError(`input rate ${inputRate} is below ${outputRate}`);
    this.ratio = inputRate / outputRate;
    this.frameSamples = frameSamples;
    this.frame = new Int16Array(frameSamples);
    this.filled = 0;
    // Averaging window state: the box filter doubles as the anti-aliasing low-pass.
    this.acc = 0;
    this.count = 0;
    this.next = this.ratio; // input position (in samples) where the current output sample ends
    this.pos = 0;
  }

  /** Feed float samples in [-1, 1]; returns the completed frames (each an Int16Array copy). */
  push(samples) {
    const frames = [];
    for (let i = 0; i < samples.length; i += 1) {
      this.acc += samples[i];
      this.count += 1;
      this.pos += 1;
      if (this.pos >= this.next) {
        const value = this.acc / this.count;
        this.acc = 0;
        this.count = 0;
        this.next += this.ratio;
        const clipped = value > 1 ? 1 : value < -1 ? -1 : value;
        this.frame[this.filled] = clipped < 0 ? Math.round(clipped * 32768) : Math.round(clipped * 32767);
        this.filled += 1;
        if (this.filled === this.frameSamples) {
          frames.push(this.frame.slice());
          this.filled = 0;
        }
      }
    }
    // Keep positions small so float error never accumulates over a long session.
    if (this.pos > 1e6) {
      this.pos -= 1e6;
      this.next -= 1e6;
    }
    return frames;
  }
}

/** Loudness of a PCM16 frame in dBFS (-100 for digital silence). */
export function levelDb(frame) {
  let sum = 0;
  for (let i = 0; i < frame.length; i += 1) sum += frame[i] * frame[i];
  const rms = Math.sqrt(sum / Math.max(1, frame.length)) / 32768;
  return rms > 1e-5 ? 20 * Math.log10(rms) : -100;
}
