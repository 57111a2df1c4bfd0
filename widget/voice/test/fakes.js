// Small in-memory stand-ins for the browser pieces the controller talks to.
export class FakeConnection {
  constructor() {
    this.sent = [];
    this.frames = [];
    this.open = () => Promise.resolve();
    this.online = true;
    this.token = 'tok';
  }

  send(message) {
    if (!this.online) return false;
    this.sent.push(message);
    return true;
  }

  sendFrame(frame) { this.frames.push(frame); }

  discardQueued() {}

  renew() { this.renewed = (this.renewed || 0) + 1; }

  audioUrl(path) { return `${path}?token=${this.token}`; }

  controls(type) { return this.sent.filter((m) => m.type === type); }
}

export class FakePlayer {
  constructor() {
    this.chunks = [];
    this.stopped = 0;
    this.playing = false;
  }

  enqueue(chunk) {
    this.chunks.push(chunk);
    this.playing = true;
  }

  get active() { return this.playing; }

  stop() {
    this.stopped += 1;
    this.playing = false;
  }
}

export const fakeMic = { start: () => Promise.resolve() };

export function frame(amplitude) {
  const pcm = new Int16Array(320);
  for (let i = 0; i < pcm.length; i += 1) pcm[i] = Math.round(amplitude * 32767 * Math.sin(i / 3));
  return pcm.buffer;
}

export const LOUD = () => frame(0.3);
export const QUIET = () => frame(0);
