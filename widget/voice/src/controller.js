// The widget's brain: one state machine fed by the user (press, release, toggle), the microphone
// (frames + local VAD) and the server's session events. No DOM here, so it is unit-tested in node.
import { levelDb } from './resample.js';
import { EnergyVad } from './vad.js';

export const STATES = Object.freeze(['idle', 'listening', 'thinking', 'speaking', 'error']);
export const MODES = Object.freeze(['push-to-talk', 'hands-free']);
const PREROLL_FRAMES = 15; // 300 ms kept so a barge-in or VAD start does not clip the first syllable
const BARGE_IN_MS = 300; // longer than a VAD start: a cough or echo should not cut the reply

/** Drives one conversation: what to stream, when to end an utterance, what to play, which state. */
export class VoiceController {
  constructor({ connection, player, microphone, mode = 'push-to-talk', endpointing = 'auto', bargeIn = true,
    vad = new EnergyVad(), onState = () => {}, onView = () => {} }) {
    if (!MODES.includes(mode)) throw new Error(`mode must be one of ${MODES.join(', ')}`);
    Object.assign(this, { connection, player, microphone, mode, endpointing, bargeIn, vad, onState, onView });
    this.state = 'idle';
    this.serverEndpointing = endpointing === 'server';
    this.talking = false; // push-to-talk held
    this.utteranceOpen = false; // frames of the current utterance are being streamed
    this.framesSent = 0;
    this.sentEnd = false;
    this.turnId = null;
    this.turn = null;
    this.finished = new Set();
    this.interrupted = new Set();
    this.preroll = [];
  }

  setState(state, detail = {}) {
    if (this.state === state) return;
    this.state = state;
    this.onState(state, detail);
  }

  setMode(mode) {
    if (!MODES.includes(mode)) throw new Error(`mode must be one of ${MODES.join(', ')}`);
    if (mode === this.mode) return;
    this.stop();
    this.mode = mode;
  }

  /** Open the microphone and the session (call from a user gesture: audio needs one). */
  activate() {
    const mic = this.microphone.start();
    const conn = this.connection.open();
    return Promise.all([mic, conn]).catch((err) => {
      this.fail(err);
      throw err;
    });
  }

  // ------------------------------------------------------------------ user input

  /** Push-to-talk pressed (or hands-free button): barge in if a reply plays, then listen. */
  press() {
    if (this.mode === 'hands-free') {
      this.toggle();
      return;
    }
    if (this.talking) return;
    this.talking = true;
    if (this.state === 'speaking' || this.state === 'thinking') this.interrupt();
    this.activate().catch(() => {});
    this.beginUtterance();
  }

  /** Push-to-talk released: the utterance ends here. */
  release() {
    if (this.mode !== 'push-to-talk' || !this.talking) return;
    this.talking = false;
    if (this.state !== 'listening') return;
    this.utteranceOpen = false;
    if (this.framesSent > 0) this.endUtterance();
    else this.setState('idle');
  }

  /** Hands-free on/off. */
  toggle() {
    if (this.state === 'idle' || this.state === 'error') {
      this.activate().catch(() => {});
      this.listen();
    } else {
      this.stop();
    }
  }

  /** Stop everything the user hears or says (Escape, hands-free off). */
  stop() {
    if (this.state === 'speaking' || this.state === 'thinking') this.interrupt();
    this.talking = false;
    this.utteranceOpen = false;
    this.framesSent = 0;
    this.connection.discardQueued();
    this.setState('idle');
  }

  // ------------------------------------------------------------------ microphone

  listen() {
    this.vad.reset();
    this.framesSent = 0;
    this.sentEnd = false;
    // With server endpointing the server hears everything; otherwise only what the local VAD calls speech.
    this.utteranceOpen = this.serverEndpointing;
    this.setState('listening');
  }

  beginUtterance() {
    this.listen();
    this.utteranceOpen = true;
    this.sendPreroll();
  }

  sendPreroll() {
    for (const frame of this.preroll) this.sendFrame(frame);
    this.preroll = [];
  }

  sendFrame(frame) {
    this.connection.sendFrame(frame);
    this.framesSent += 1;
  }

  /** One 20 ms PCM16 frame (ArrayBuffer) from the microphone. */
  onFrame(frame) {
    const level = levelDb(new Int16Array(frame));
    const speaking = this.state === 'speaking';
    const event = this.vad.push(level, speaking ? BARGE_IN_MS : undefined);
    if (this.state === 'listening' && this.utteranceOpen) {
      this.sendFrame(frame);
    } else {
      this.preroll.push(frame);
      if (this.preroll.length > PREROLL_FRAMES) this.preroll.shift();
    }
    if (speaking && event === 'start' && this.bargeIn) {
      this.interrupt();
      if (this.mode === 'hands-free') this.beginUtterance();
      else this.setState('idle');
      return;
    }
    if (this.state !== 'listening' || this.mode !== 'hands-free') return;
    if (event === 'start' && !this.utteranceOpen) {
      this.utteranceOpen = true;
      this.sendPreroll();
    } else if (event === 'end' && !this.serverEndpointing) {
      this.utteranceOpen = false;
      this.endUtterance();
    }
  }

  endUtterance() {
    this.sentEnd = this.connection.send({ type: 'end' });
    if (!this.sentEnd) {
      this.fail({ code: 'offline', message: 'Not connected: the question could not be sent. Try again.' });
      return;
    }
    this.turnId = null;
    this.turn = null;
    this.setState('thinking');
  }

  /** Barge-in: silence the reply and tell the server to stop producing it. */
  interrupt() {
    const turnId = this.turnId;
    const played = this.turn ? this.turn.played : 0;
    this.player.stop();
    if (turnId) {
      this.interrupted.add(turnId);
      this.finished.add(turnId);
    }
    this.connection.send({ type: 'interrupt', turn_id: turnId, played_chunks: played });
    this.onView({ kind: 'interrupt', turnId });
    this.turnId = null;
    this.turn = null;
  }

  // ------------------------------------------------------------------ server events

  adoptTurn(turnId) {
    if (!turnId || turnId === this.turnId) return;
    this.turnId = turnId;
    this.turn = { reply: null, done: false, played: 0, audio: 0, fallbackSpoken: false, lang: null };
  }

  /** Whether an event belongs to the turn the user is waiting for (adopting it when still unknown). */
  isCurrent(message) {
    const id = message.turn_id;
    if (!id || this.finished.has(id)) return false;
    if (id === this.turnId) return true;
    if (this.state === 'thinking' && !this.turnId) {
      this.adoptTurn(id);
      return true;
    }
    return false;
  }

  onEvent(message) {
    const handler = this[`on_${message.type}`];
    if (handler) handler.call(this, message);
  }

  on_accepted(message) {
    if (!this.sentEnd && this.mode === 'hands-free' && this.endpointing !== 'client') {
      this.serverEndpointing = true; // the server ended an utterance itself: stop sending our own ends
    }
    this.sentEnd = false;
    this.utteranceOpen = false;
    if (this.state === 'listening') this.setState('thinking');
    if (this.state === 'thinking') this.adoptTurn(message.turn_id);
  }

  on_transcript(message) {
    if (!this.isCurrent(message) && !(message.final === false && this.state === 'listening')) return;
    this.onView({ kind: 'transcript', text: message.text || '', final: message.final !== false });
  }

  on_reply(message) {
    if (!this.isCurrent(message)) return;
    this.turn.reply = message.text || '';
    this.turn.lang = message.language || null;
    this.onView({ kind: 'reply', text: this.turn.reply, actions: message.suggested_actions || [],
      sources: message.sources || [] });
  }

  on_audio(message) {
    if (!this.isCurrent(message)) return;
    this.turn.audio += 1;
    const turnId = this.turnId;
    if (message.provider === 'browser' || !message.audio_url) {
      const text = message.text || (message.speech && message.speech.text) || this.turn.reply || '';
      if (!text) return;
      if (!message.text) this.turn.fallbackSpoken = true; // the whole reply was handed over
      this.player.enqueue({ kind: 'speech', text, lang: message.language || message.lang
        || (message.speech && message.speech.lang) || this.turn.lang, voice: message.voice || null, turnId });
      return;
    }
    this.player.enqueue({ kind: 'audio', url: this.connection.audioUrl(message.audio_url), text: message.text || null,
      turnId, index: message.index ?? this.turn.audio - 1 });
  }

  on_done(message) {
    if (!this.isCurrent(message)) return;
    this.turn.done = true;
    if (message.status === 'no_speech') this.onView({ kind: 'notice', text: "Sorry, I didn't catch that." });
    this.maybeFinish();
  }

  on_error(message) {
    if (message.seq === null || message.seq === undefined) {
      this.connectionError(message);
      return;
    }
    if (!this.isCurrent(message)) return;
    this.onView({ kind: 'error', code: message.code, text: message.message || 'Something went wrong.' });
    this.turn.done = true;
    if (message.stage === 'tts' && this.turn.reply && !this.turn.audio) {
      this.turn.fallbackSpoken = true; // no server audio at all: the browser reads the reply
      this.player.enqueue({ kind: 'speech', text: this.turn.reply, lang: this.turn.lang, voice: null,
        turnId: this.turnId });
      return;
    }
    if (!this.player.active) this.fail(message, false);
  }

  connectionError(message) {
    // An 'end' that crossed the server's own endpointing finds an empty buffer: nothing was lost.
    if (message.code === 'empty_utterance' && (this.serverEndpointing || this.state !== 'thinking' || this.turnId)) {
      return;
    }
    if (message.code === 'empty_utterance') {
      this.onView({ kind: 'notice', text: "Sorry, I didn't hear anything." });
      this.finishTurn();
      return;
    }
    this.fail(message);
  }

  on_session_reset() {
    this.turnId = null;
    this.turn = null;
    if (this.state === 'thinking') this.fail({ code: 'session_reset', message: 'The connection was reset. Ask again.' });
  }

  // ------------------------------------------------------------------ playback

  /** The player started a chunk. */
  playbackStarted(chunk, how) {
    if (chunk.turnId && chunk.turnId !== this.turnId) return;
    this.setState('speaking');
    this.onView({ kind: 'playback', how, index: chunk.index ?? 0 });
  }

  /** The player finished a chunk. */
  chunkPlayed(chunk) {
    if (this.turn && chunk.turnId === this.turnId) this.turn.played += 1;
  }

  /** What the browser should say when a chunk's audio fails: the whole reply, once per turn. */
  fallbackText(chunk) {
    if (!this.turn || chunk.turnId !== this.turnId || this.turn.fallbackSpoken) return null;
    this.turn.fallbackSpoken = true;
    return this.turn.reply;
  }

  maybeFinish() {
    if (this.turn && this.turn.done && !this.player.active) this.finishTurn();
  }

  finishTurn() {
    if (this.turnId) this.finished.add(this.turnId);
    this.turnId = null;
    this.turn = null;
    if (this.mode === 'hands-free' && this.state !== 'idle') this.listen();
    else this.setState('idle');
  }

  fail(err, resetTurn = true) {
    if (resetTurn && this.turnId) this.finished.add(this.turnId);
    if (resetTurn) {
      this.turnId = null;
      this.turn = null;
    }
    this.talking = false;
    this.utteranceOpen = false;
    this.onView({ kind: 'error', code: err.code || 'error', text: err.message || String(err) });
    this.setState('error', { code: err.code });
  }
}
