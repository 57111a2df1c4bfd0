// A small energy voice-activity detector on 20 ms frames: enough for the client endpointing fallback
// and barge-in; the server's VAD stays the authority when it is available.

const DEFAULTS = {
  frameMs: 20,
  minDb: -50, // never call anything quieter than this speech
  marginDb: 12, // speech must be this far above the tracked noise floor
  startMs: 120, // sustained loudness before speech starts
  endSilenceMs: 800, // quiet after speech before the utterance ends
};

/** Energy VAD: feed frame levels (dBFS), get 'start' / 'end' transitions. */
export class EnergyVad {
  constructor(options = {}) {
    this.options = { ...DEFAULTS, ...options };
    this.reset();
  }

  /** Forget the current utterance (keeps the noise floor). */
  reset() {
    this.speaking = false;
    this.loudMs = 0;
    this.quietMs = 0;
    if (this.floorDb === undefined) this.floorDb = -70;
  }

  /** Threshold a frame must exceed to count as speech. */
  threshold() {
    return Math.max(this.options.minDb, this.floorDb + this.options.marginDb);
  }

  /** One frame's level; returns 'start', 'end' or null. */
  push(levelDb, startMs = this.options.startMs) {
    const { frameMs, endSilenceMs } = this.options;
    const loud = levelDb > this.threshold();
    // Floor falls at once and rises slowly (very slowly during speech), so speech does not drag it up
    // but a room that got louder for good is learned within half a minute.
    if (levelDb < this.floorDb) this.floorDb = levelDb;
    else this.floorDb += (loud ? 0.001 : 0.05) * (levelDb - this.floorDb);
    if (loud) {
      this.loudMs += frameMs;
      this.quietMs = 0;
      if (!this.speaking && this.loudMs >= startMs) {
        this.speaking = true;
        return 'start';
      }
    } else {
      this.loudMs = 0;
      this.quietMs += frameMs;
      if (this.speaking && this.quietMs >= endSilenceMs) {
        this.speaking = false;
        return 'end';
      }
    }
    return null;
  }
}
