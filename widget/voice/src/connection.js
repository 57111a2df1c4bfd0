// The session and its WebSocket: creates the session over REST, keeps the token fresh, streams
// frames, and reconnects with last_seq so no event is lost or repeated across a network drop.

const MAX_QUEUED_FRAMES = 150; // 3 s of 20 ms frames kept while (re)connecting
const POLICY_VIOLATION = 1008;

/** Error carrying the server's error code. */
export class VoiceWidgetError extends Error {
  constructor(message, code = 'error', status = 0) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

/** Join an endpoint and an API path ('' endpoint = the page's origin). */
export function apiUrl(endpoint, path) {
  return `${(endpoint || '').replace(/\/+$/, '')}${path}`;
}

/** The absolute ws(s):// URL of a websocket_url that may be a path. */
export function wsUrl(endpoint, websocketUrl, base) {
  if (/^wss?:\/\//.test(websocketUrl)) return websocketUrl;
  const url = new URL(apiUrl(endpoint, websocketUrl), base);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.toString();
}

async function readError(response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    // not JSON (a proxy's page): the status says enough
  }
  const err = body.error && typeof body.error === 'object' ? body.error : body;
  return new VoiceWidgetError(err.message || `HTTP ${response.status}`, err.code || `http_${response.status}`,
    response.status);
}

/** One voice session: REST calls plus a self-healing WebSocket. */
export class VoiceConnection {
  constructor(options) {
    this.endpoint = options.endpoint || '';
    this.project = options.project;
    this.language = options.language || null;
    // false when the language is only the page's <html lang>: a hint the server may not support.
    this.languageRequired = options.languageRequired !== false;
    this.voice = options.voice || null;
    this.base = options.base || (typeof location !== 'undefined' ? location.href : 'http://localhost/');
    this.fetch = options.fetch || ((...args) => globalThis.fetch(...args));
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    this.timers = options.timers || { set: (f, ms) => setTimeout(f, ms), clear: (id) => clearTimeout(id) };
    this.onEvent = options.onEvent || (() => {});
    this.onStatus = options.onStatus || (() => {});
    this.onSession = options.onSession || (() => {});
    this.pingMs = options.pingMs ?? 20000;
    // How the server ends an utterance: push_to_talk only on our `end`, hands_free also at a pause it hears.
    this.serverMode = options.serverMode || 'hands_free';
    this.session = null;
    this.token = null;
    this.lastSeq = 0;
    this.resume = false;
    this.socket = null;
    this.queue = [];
    this.closing = false;
    this.attempt = 0;
    this.opening = null;
    this.refreshTimer = null;
    this.reconnectTimer = null;
    this.pingTimer = null;
    this.awaitingPong = false;
  }

  /** Make sure a session exists and the socket is open (or being opened). */
  open() {
    this.closing = false;
    if (this.socket && this.socket.readyState <= 1) return this.opening || Promise.resolve();
    this.opening = this.connect().finally(() => { this.opening = null; });
    return this.opening;
  }

  postSession() {
    const body = { project: this.project };
    if (this.language) body.language = this.language;
    if (this.voice) body.voice = this.voice;
    return this.fetch(apiUrl(this.endpoint, '/api/v1/voice/sessions'), {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
    });
  }

  async createSession() {
    let response = await this.postSession();
    if (response.status === 400 && this.language && !this.languageRequired) {
      // A page language the server cannot serve: its default language beats no assistant at all.
      const err = await readError(response);
      if (err.code !== 'language_unsupported') throw err;
      this.language = null;
      response = await this.postSession();
    }
    if (response.status !== 201) throw await readError(response);
    this.adopt(await response.json());
    this.lastSeq = 0;
    this.resume = false;
  }

  /** Take a session view with a token; schedule the next refresh before it expires. */
  adopt(view) {
    this.session = { ...(this.session || {}), ...view };
    this.onSession(this.session);
    this.token = view.token || this.token;
    this.timers.clear(this.refreshTimer);
    if (view.token_expires_in) {
      this.refreshTimer = this.timers.set(() => this.refreshToken().catch(() => {}), view.token_expires_in * 800);
    }
  }

  async refreshToken() {
    const sid = this.session.session_id;
    const response = await this.fetch(apiUrl(this.endpoint, `/api/v1/voice/sessions/${sid}/token`), {
      method: 'POST', headers: { Authorization: `Bearer ${this.token}` },
    });
    if (response.status !== 200) throw await readError(response);
    this.adopt(await response.json());
  }

  /** Switch the server's endpointing mode; an open socket reconnects (resuming its events) to apply it. */
  setServerMode(mode) {
    if (mode === this.serverMode) return;
    this.serverMode = mode;
    if (this.socket && this.socket.readyState === 1) this.socket.close();
  }

  async connect() {
    if (!this.session) await this.createSession();
    this.onStatus(this.attempt ? 'reconnecting' : 'connecting');
    // Every reconnect of a session resumes after the last event seen (0 included: nothing seen yet).
    const resume = this.resume ? `&last_seq=${this.lastSeq}` : '';
    const query = `token=${encodeURIComponent(this.token)}&mode=${this.serverMode}${resume}`;
    const url = wsUrl(this.endpoint, this.session.websocket_url, this.base);
    const socket = new this.WebSocket(`${url}${url.includes('?') ? '&' : '?'}${query}`);
    socket.binaryType = 'arraybuffer';
    this.socket = socket;
    await new Promise((resolve, reject) => {
      socket.onopen = () => {
        this.attempt = 0;
        this.resume = true;
        this.onStatus('open');
        this.flush();
        this.startPing();
        resolve();
      };
      socket.onmessage = (message) => this.receive(message.data);
      socket.onclose = (close) => {
        if (this.socket === socket) this.dropped(close.code);
        reject(new VoiceWidgetError('connection closed', 'ws_closed'));
      };
      socket.onerror = () => {}; // onclose follows and decides what to do
    });
  }

  receive(raw) {
    if (typeof raw !== 'string') return;
    let message;
    try {
      message = JSON.parse(raw);
    } catch {
      return;
    }
    if (message.type === 'pong') {
      this.awaitingPong = false;
      return;
    }
    if (typeof message.seq === 'number') {
      if (message.seq <= this.lastSeq) return; // replayed twice across a reconnect
      this.lastSeq = message.seq;
    }
    this.onEvent(message);
  }

  dropped(code) {
    this.socket = null;
    this.timers.clear(this.pingTimer);
    if (this.closing) {
      this.onStatus('closed');
      return;
    }
    this.attempt += 1;
    this.onStatus('reconnecting');
    const delay = Math.min(10000, 250 * 2 ** Math.min(this.attempt, 6));
    this.timers.clear(this.reconnectTimer);
    this.reconnectTimer = this.timers.set(() => this.recover(code).catch(() => {}), delay);
  }

  /** Reconnect after a drop; a refused token is refreshed, a dead session replaced. */
  async recover(code) {
    if (this.closing) return;
    if (code === POLICY_VIOLATION) {
      try {
        await this.refreshToken();
      } catch (err) {
        this.session = null;
        this.onEvent({ type: 'session_reset', seq: null, reason: err.code });
      }
    }
    await this.open();
  }

  startPing() {
    this.timers.clear(this.pingTimer);
    if (!this.pingMs) return;
    this.awaitingPong = false;
    const tick = () => {
      if (!this.socket || this.socket.readyState !== 1) return;
      if (this.awaitingPong) {
        this.socket.close(); // no pong for a whole interval: the network is gone
        return;
      }
      this.awaitingPong = true;
      this.socket.send(JSON.stringify({ type: 'ping' }));
      this.pingTimer = this.timers.set(tick, this.pingMs);
    };
    this.pingTimer = this.timers.set(tick, this.pingMs);
  }

  get isOpen() {
    return Boolean(this.socket && this.socket.readyState === 1);
  }

  /** Send a JSON control message (dropped while disconnected: they make no sense later). */
  send(message) {
    if (!this.isOpen) return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }

  /** Send one PCM16 frame; frames are queued briefly while the socket (re)opens. */
  sendFrame(buffer) {
    if (this.isOpen) {
      this.socket.send(buffer);
      return;
    }
    this.queue.push(buffer);
    if (this.queue.length > MAX_QUEUED_FRAMES) this.queue.shift();
  }

  flush() {
    const frames = this.queue;
    this.queue = [];
    for (const frame of frames) this.socket.send(frame);
  }

  /** Drop queued frames (the utterance they belonged to is abandoned). */
  discardQueued() {
    this.queue = [];
  }

  /** Where to fetch a reply's audio (the token goes in the query: audio elements send no headers). */
  audioUrl(path) {
    const url = /^https?:\/\//.test(path) ? path : apiUrl(this.endpoint, path);
    return `${url}${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(this.token)}`;
  }

  /** Forget the session (it expired server-side): the next open() starts a new one. */
  renew() {
    const { socket } = this;
    this.socket = null; // its close event must not trigger a reconnect to the dead session
    this.timers.clear(this.refreshTimer);
    this.timers.clear(this.pingTimer);
    this.session = null;
    this.queue = [];
    if (socket) socket.close();
  }

  /** Close the socket for good (no reconnect). */
  close() {
    this.closing = true;
    for (const timer of [this.refreshTimer, this.reconnectTimer, this.pingTimer]) this.timers.clear(timer);
    if (this.socket) this.socket.close();
  }
}
