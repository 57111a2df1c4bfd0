// Reply playback: chunks (one per sentence) are fetched as soon as their event arrives and played
// strictly in order; a chunk that cannot play is spoken by the browser instead.

/** Plays a queue of reply chunks: {kind: 'audio', url, text?} or {kind: 'speech', text, lang, voice}. */
export class ReplyPlayer {
  constructor({ audio, speech, fallbackText = () => null, onStart = () => {}, onChunk = () => {},
    onIdle = () => {}, onFallback = () => {} }) {
    Object.assign(this, { audio, speech, fallbackText, onStart, onChunk, onIdle, onFallback });
    this.queue = [];
    this.generation = 0;
    this.busy = false;
    this.played = 0;
  }

  /** Add a chunk; audio starts downloading now so the next sentence is ready when this one ends. */
  enqueue(chunk) {
    if (chunk.kind === 'audio') {
      chunk.ready = this.audio.load(chunk.url);
      chunk.ready.catch(() => {}); // handled when the chunk's turn comes
    }
    this.queue.push(chunk);
    if (!this.busy) this.run(this.generation);
  }

  get active() {
    return this.busy || this.queue.length > 0;
  }

  async run(generation) {
    this.busy = true;
    while (this.queue.length && generation === this.generation) {
      const chunk = this.queue.shift();
      await this.playOne(chunk, generation);
      if (generation !== this.generation) return;
      this.played += 1;
      this.onChunk(chunk, this.played);
    }
    if (generation !== this.generation) return;
    this.busy = false;
    this.onIdle();
  }

  async playOne(chunk, generation) {
    try {
      if (chunk.kind === 'speech') {
        this.onStart(chunk, 'speech');
        await this.speech.speak(chunk.text, chunk.lang, chunk.voice);
        return;
      }
      const buffer = await chunk.ready;
      if (generation !== this.generation) return;
      await this.audio.play(buffer, () => this.onStart(chunk, 'audio'));
    } catch (err) {
      if (generation !== this.generation) return;
      const text = chunk.kind === 'audio' ? (chunk.text || this.fallbackText(chunk)) : null;
      this.onFallback(chunk, err, Boolean(text));
      if (!text) return;
      this.onStart(chunk, 'speech');
      try {
        await this.speech.speak(text, chunk.lang, chunk.voice);
      } catch {
        // nothing left to try: the reply text is on screen
      }
    }
  }

  /** Stop at once (barge-in): drop the queue and silence both outputs. */
  stop() {
    this.generation += 1;
    this.queue = [];
    this.busy = false;
    this.audio.stop();
    this.speech.cancel();
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Audio chunks through Web Audio (decoded ahead, gapless enough for sentence pauses). */
export class WebAudioOutput {
  constructor(getContext, fetchImpl = (...args) => globalThis.fetch(...args)) {
    this.getContext = getContext;
    this.fetch = fetchImpl;
    this.source = null;
  }

  async load(url) {
    const response = await this.fetch(url);
    if (!response.ok) throw new Error(`reply audio: HTTP ${response.status}`);
    return this.getContext().decodeAudioData(await response.arrayBuffer());
  }

  /** Play a decoded buffer; rejects when the page may not play sound (autoplay policy). */
  async play(buffer, started = () => {}) {
    const context = this.getContext();
    if (context.state !== 'running') {
      await Promise.race([context.resume(), sleep(400)]);
      if (context.state !== 'running') throw new Error('audio playback blocked by the browser (autoplay)');
    }
    const source = context.createBufferSource();
    source.buffer = buffer;
    source.connect(context.destination);
    this.source = source;
    await new Promise((resolve) => {
      source.onended = resolve;
      source.start();
      started();
    });
    if (this.source === source) this.source = null;
  }

  stop() {
    const { source } = this;
    this.source = null;
    if (source) {
      try {
        source.stop();
      } catch {
        // already ended
      }
    }
  }
}

/** The page's speechSynthesis: the `browser` provider and the fallback of every audio failure. */
export class BrowserSpeech {
  constructor(synth = globalThis.speechSynthesis, Utterance = globalThis.SpeechSynthesisUtterance) {
    this.synth = synth;
    this.Utterance = Utterance;
  }

  get available() {
    return Boolean(this.synth && this.Utterance);
  }

  pickVoice(name, lang) {
    const voices = this.synth.getVoices ? this.synth.getVoices() : [];
    return voices.find((v) => name && v.name === name)
      || voices.find((v) => lang && v.lang && v.lang.toLowerCase() === lang.toLowerCase())
      || voices.find((v) => lang && v.lang && v.lang.slice(0, 2).toLowerCase() === lang.slice(0, 2).toLowerCase())
      || null;
  }

  /** Speak and resolve when done (or after a generous bound: some engines never fire 'end'). */
  speak(text, lang, voiceName) {
    if (!this.available) return Promise.reject(new Error('speechSynthesis is not available in this browser'));
    return new Promise((resolve, reject) => {
      const utterance = new this.Utterance(text);
      if (lang) utterance.lang = lang;
      const voice = this.pickVoice(voiceName, lang);
      if (voice) utterance.voice = voice;
      const bound = setTimeout(resolve, 3000 + text.length * 90);
      utterance.onend = () => { clearTimeout(bound); resolve(); };
      utterance.onerror = (event) => {
        clearTimeout(bound);
        if (event && (event.error === 'interrupted' || event.error === 'canceled')) resolve();
        else reject(new Error(`speechSynthesis: ${event && event.error}`));
      };
      this.synth.speak(utterance);
    });
  }

  cancel() {
    if (this.available) this.synth.cancel();
  }
}
