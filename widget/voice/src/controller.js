// The widget's brain: one state machine fed by the user (press, release, toggle), the microphone
// (frames + local VAD) and the server's session events. No DOM here, so it is unit-tested in node.
//
// Turns are the server's utterances (turn_id = utterance id). The server may end an utterance itself
// after a pause, so one press can yield several turns; every turn that is not abandoned (barge-in,
// stop) is answered, and the conversation returns to idle/listening once all of them are done and
// their audio has played.
import { STRINGS } from './i18n.js';
import { levelDb } from './resample.js';
import { EnergyVad } from './vad.js';

export const STATES = Object.freeze(['idle', 'listening', 'thinking', 'speaking', 'error']);
export const MODES = Object.freeze(['push-to-talk', 'hands-free']);
export const ENDPOINTING = Object.freeze(['auto', 'server', 'client']);
const PREROLL_FRAMES = 15; // 300 ms kept so a barge-in or VAD start does not clip the first syllable
const BARGE_IN_MS = 300; // longer than a VAD start: a cough or echo should not cut the reply
// Local quiet before the client ends an utterance: 'client' ends it itself; 'auto' leaves the
// server's VAD (1.2 s) time to decide first and only then closes the utterance as a safety net.
const CLIENT_END_MS = { client: 800, auto: 1500 };
// Session-level problems the server reports on the socket: a new session fixes them.
const SESSION_GONE = new Set(['voice_session_expired', 'voice_session_not_found']);
// Ids of turns whose late events are ignored; older ones are forgotten (their events have long arrived).
const MAX_ABANDONED = 64;
// Server event type -> the method handling it (an explicit map: no other method is reachable by name).
const EVENT_HANDLERS = Object.freeze({
  status: 'onStatus', accepted: 'onAccepted', transcript: 'onTranscript', reply: 'onReply', audio: 'onAudio',
  done: 'onDone', error: 'onError', session_reset: 'onSessionReset',
});

/** The server's mode for a widget mode: a held button ends utterances itself, so the server must not. */
function serverMode(mode) {
  return mode === 'push-to-talk' ? 'push_to_talk' : 'hands_free';
}

/** Drives one conversation: what to stream, when to end an utterance, what to play, which state. */
export class VoiceController {
  constructor({ connection, player, microphone, mode = 'push-to-talk', endpointing = 'auto', bargeIn = true,
    vad = null, strings = STRINGS.en, onState = () => {}, onView = () => {} }) {
    if (!MODES.includes(mode)) throw new Error(`mode must be one of ${MODES.join(', ')}`);
    if (!ENDPOINTING.includes(endpointing)) throw new Error(`endpointing must be one of ${ENDPOINTING.join(', ')}`);
    Object.assign(this, { connection, player, microphone, mode, endpointing, bargeIn, strings, onState, onView });
    this.connection.setServerMode?.(serverMode(mode));
    this.vad = vad || new EnergyVad({ endSilenceMs: CLIENT_END_MS[endpointing] || 800 });
    this.state = 'idle';
    this.talking = false; // push-to-talk held
    this.streaming = false; // frames of an utterance are going to the server
    this.unended = 0; // frames sent since the last `end`
    this.turns = new Map(); // turns of the current exchange, by id
    this.abandoned = new Set(); // interrupted, stopped or finished turns: their late events are ignored
    this.preroll = [];
    this.overReplyMs = 0; // speech heard over the reply, for barge-in
    this.typedOnly = false; // the exchange is a typed question with no conversation to go back to
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
    this.connection.setServerMode?.(serverMode(mode));
  }

  /** Open the microphone and the session (call from a user gesture: audio needs one). */
  activate() {
    return Promise.all([this.microphone.start(), this.connection.open()]).catch((err) => {
      this.fail(err);
      throw err;
    });
  }

  // ------------------------------------------------------------------ user input

  /** Push-to-talk pressed (hands-free: toggle): barge in if a reply is on its way, then listen. */
  press() {
    if (this.mode === 'hands-free') {
      this.toggle();
      return;
    }
    if (this.talking) return;
    this.talking = true;
    this.abandonExchange();
    this.activate().catch(() => {});
    this.listen();
    this.openUtterance();
  }

  /** Push-to-talk released: the utterance ends here. */
  release() {
    if (this.mode !== 'push-to-talk' || !this.talking) return;
    this.talking = false;
    if (this.state !== 'listening') return;
    const spoke = this.unended > 0;
    this.closeUtterance();
    if (spoke) this.setState('thinking');
    else this.setState('idle');
  }

  /** Hands-free on/off. */
  toggle() {
    if (this.state === 'idle' || this.state === 'error') {
      this.activate().catch(() => {});
      this.listen();
      if (this.endpointing === 'server') this.openUtterance();
    } else {
      this.stop();
    }
  }

  /** A typed question: stop any reply, then send it as a text turn (no microphone needed); false if empty. */
  ask(text) {
    const question = typeof text === 'string' ? text.trim() : '';
    if (!question) return false;
    // Typing during a hands-free conversation goes back to listening afterwards; otherwise to idle.
    this.typedOnly = !(this.mode === 'hands-free' && ['listening', 'thinking', 'speaking'].includes(this.state));
    this.talking = false;
    this.closeUtterance();
    this.abandonExchange();
    this.unlockAudio();
    this.setState('thinking');
    this.connection.open().then(() => {
      if (!this.connection.send({ type: 'text', text: question })) {
        throw Object.assign(new Error(this.strings.failed), { code: 'ws_closed' });
      }
    }).catch((err) => this.fail(err));
    return true;
  }

  /** Create the audio output inside the user's gesture (Enter, Send), so the reply may play. */
  unlockAudio() {
    if (typeof this.microphone.audioContext !== 'function') return;
    try {
      this.microphone.audioContext();
    } catch {
      // no Web Audio: the reply is spoken by speechSynthesis instead
    }
  }

  /** Stop everything the user hears or says (Escape, hands-free off). */
  stop() {
    this.talking = false;
    this.closeUtterance();
    this.abandonExchange();
    this.connection.discardQueued();
    this.setState('idle');
  }

  // ------------------------------------------------------------------ microphone

  listen() {
    this.typedOnly = false;
    this.vad.reset();
    this.setState('listening');
  }

  /** Start streaming, beginning with the pre-roll (the words just before the trigger). */
  openUtterance() {
    this.streaming = true;
    for (const frame of this.preroll) this.sendFrame(frame);
    this.preroll = [];
  }

  /** Stop streaming; an utterance we streamed is always closed by us (the server treats a late `end` as a no-op). */
  closeUtterance() {
    this.streaming = false;
    if (this.unended > 0) {
      this.unended = 0;
      this.connection.send({ type: 'end' });
    }
  }

  sendFrame(frame) {
    this.connection.sendFrame(frame);
    this.unended += 1;
  }

  /** One 20 ms PCM16 frame (ArrayBuffer) from the microphone. */
  onFrame(frame) {
    const level = levelDb(new Int16Array(frame));
    const loud = level > this.vad.threshold();
    const event = this.vad.push(level);
    if (this.streaming) {
      this.sendFrame(frame);
    } else {
      this.preroll.push(frame);
      if (this.preroll.length > PREROLL_FRAMES) this.preroll.shift();
    }
    // Barge-in counts only speech heard while the reply plays (the VAD may still be inside the
    // user's previous utterance, so its own 'start' is not the signal).
    // Short dips between syllables only slow the count down.
    const step = this.vad.options.frameMs;
    this.overReplyMs = this.state !== 'speaking' ? 0 : Math.max(0, this.overReplyMs + (loud ? step : -step));
    if (this.overReplyMs >= BARGE_IN_MS && this.bargeIn) {
      this.overReplyMs = 0;
      this.abandonExchange();
      if (this.mode === 'hands-free') {
        this.listen();
        this.vad.speaking = true; // the barge-in speech is under way: its end closes the utterance
        this.openUtterance();
      } else {
        this.setState('idle');
      }
      return;
    }
    if (this.state !== 'listening' || this.mode !== 'hands-free' || this.endpointing === 'server') return;
    if (event === 'start' && !this.streaming) {
      this.openUtterance();
    } else if (event === 'end' && this.streaming) {
      this.closeUtterance();
      this.setState('thinking');
    }
  }

  /** Barge-in or stop: silence the reply and tell the server to stop producing it. */
  abandonExchange() {
    const inFlight = [...this.turns.values()].filter((t) => !t.done || t.playing);
    const playing = this.player.active;
    if (this.turns.size === 0 && !playing) return;
    this.player.stop();
    const current = inFlight.find((t) => t.reply !== null) || inFlight[0] || [...this.turns.values()].pop();
    for (const id of this.turns.keys()) this.abandon(id);
    this.turns.clear();
    if (current) {
      this.connection.send({ type: 'interrupt', turn_id: current.id, played_chunks: current.played });
      this.onView({ kind: 'interrupt', turnId: current.id });
    }
  }

  // ------------------------------------------------------------------ server events

  /** The record of one of our turns, or null for an abandoned one. */
  turnFor(id) {
    if (!id || this.abandoned.has(id)) return null;
    let turn = this.turns.get(id);
    if (!turn) {
      turn = { id, reply: null, lang: null, done: false, status: null, audio: 0, played: 0, playing: false,
        fallbackSpoken: false };
      this.turns.set(id, turn);
    }
    return turn;
  }

  onEvent(message) {
    const name = Object.hasOwn(EVENT_HANDLERS, message.type) ? EVENT_HANDLERS[message.type] : null;
    if (name) this[name](message);
  }

  /** Ignore this turn's late events from now on (at most MAX_ABANDONED ids are kept). */
  abandon(id) {
    this.abandoned.delete(id); // re-added last: the most recent stay
    this.abandoned.add(id);
    if (this.abandoned.size > MAX_ABANDONED) this.abandoned.delete(this.abandoned.values().next().value);
  }

  onStatus(message) {
    if (message.status === 'listening') this.turnFor(message.turn_id); // the server opened one of our utterances
  }

  onAccepted(message) {
    this.turnFor(message.turn_id);
    if (this.state === 'listening' && !this.talking && !this.streaming) this.setState('thinking');
  }

  onTranscript(message) {
    const turn = this.turnFor(message.turn_id);
    if (!turn) return;
    const final = message.final !== false;
    this.onView({ kind: 'transcript', text: message.text || '', final });
    // The server heard the end of a hands-free utterance before our VAD did.
    if (final && message.text && this.state === 'listening' && this.mode === 'hands-free') {
      this.closeUtterance();
      this.setState('thinking');
    }
  }

  onReply(message) {
    const turn = this.turnFor(message.turn_id);
    if (!turn) return;
    turn.reply = message.text || '';
    turn.lang = message.language || null;
    this.onView({ kind: 'reply', text: turn.reply, actions: message.suggested_actions || [],
      sources: message.sources || [] });
  }

  onAudio(message) {
    const turn = this.turnFor(message.turn_id);
    if (!turn) return;
    turn.audio += 1;
    const index = message.index ?? turn.audio - 1;
    if (message.provider === 'browser' || !message.audio_url) {
      const speech = message.speech || {};
      const text = message.text || speech.text || turn.reply || '';
      if (!text) return;
      if (!message.text && !speech.text) turn.fallbackSpoken = true; // the whole reply was handed over
      this.player.enqueue({ kind: 'speech', text, lang: message.language || message.lang || speech.lang || turn.lang,
        voice: message.voice || speech.voice || null, turnId: turn.id, index });
      return;
    }
    this.player.enqueue({ kind: 'audio', url: this.connection.audioUrl(message.audio_url),
      text: message.text || null, lang: turn.lang, turnId: turn.id, index });
  }

  onDone(message) {
    const turn = this.turnFor(message.turn_id);
    if (!turn) {
      this.abandoned.delete(message.turn_id); // an abandoned turn's last event: nothing more will come
      return;
    }
    turn.done = true;
    turn.status = message.status;
    this.maybeFinish();
  }

  onError(message) {
    if (message.seq === null || message.seq === undefined) {
      this.connectionError(message);
      return;
    }
    const turn = this.turnFor(message.turn_id);
    if (!turn) return;
    turn.done = true;
    turn.status = 'error';
    this.onView({ kind: 'error', code: message.code, text: message.message || this.strings.failed });
    if (message.stage === 'tts' && turn.reply && !turn.fallbackSpoken) {
      turn.fallbackSpoken = true; // no (more) server audio: the browser reads the reply
      this.player.enqueue({ kind: 'speech', text: turn.reply, lang: turn.lang, voice: null, turnId: turn.id, index: 0 });
      return;
    }
    this.maybeFinish();
  }

  connectionError(message) {
    // An `end` that crossed the server's own endpointing finds no open utterance: nothing was lost.
    if (message.code === 'empty_utterance') {
      this.maybeFinish(true);
      return;
    }
    if (SESSION_GONE.has(message.code)) {
      this.connection.renew();
      this.fail({ code: message.code, message: this.strings.expired });
      return;
    }
    this.fail(message);
  }

  onSessionReset() {
    this.turns.clear();
    if (this.state === 'thinking') this.fail({ code: 'session_reset', message: this.strings.reset });
  }

  // ------------------------------------------------------------------ playback

  /** The player started a chunk. */
  playbackStarted(chunk, how) {
    const turn = this.turns.get(chunk.turnId);
    if (!turn) return;
    turn.playing = true;
    if (!this.talking && !this.streaming) this.setState('speaking');
    this.onView({ kind: 'playback', how, index: chunk.index ?? 0, turnId: chunk.turnId });
  }

  /** The player finished a chunk. */
  chunkPlayed(chunk) {
    const turn = this.turns.get(chunk.turnId);
    if (!turn) return;
    turn.played += 1;
    turn.playing = false;
  }

  /** What the browser should say when a chunk's audio fails: the whole reply, once per turn. */
  fallbackText(chunk) {
    const turn = this.turns.get(chunk.turnId);
    if (!turn || turn.fallbackSpoken) return null;
    turn.fallbackSpoken = true;
    return turn.reply;
  }

  /** When every turn of the exchange is done and played: back to listening (hands-free) or idle. */
  maybeFinish(nothingPending = false) {
    if (this.state !== 'thinking' && this.state !== 'speaking') return;
    if (this.player.active || this.streaming) return;
    const turns = [...this.turns.values()];
    if (!turns.length && !nothingPending) return; // `accepted` (and the turn's events) are still on their way
    if (turns.some((t) => !t.done)) return;
    if (!turns.some((t) => t.reply !== null) && !turns.some((t) => t.status === 'error')) {
      this.onView({ kind: 'notice', text: this.strings.notHeard });
    }
    for (const id of this.turns.keys()) this.abandon(id);
    this.turns.clear();
    if (this.mode === 'hands-free' && !this.typedOnly) {
      this.listen();
      if (this.endpointing === 'server') this.openUtterance();
    } else {
      this.setState('idle');
    }
  }

  fail(err) {
    this.talking = false;
    this.closeUtterance();
    const known = err.code && Object.hasOwn(this.strings.errors, err.code) ? this.strings.errors[err.code] : null;
    this.onView({ kind: 'error', code: err.code || 'error', text: known || err.message || String(err) });
    this.setState('error', { code: err.code });
  }
}
