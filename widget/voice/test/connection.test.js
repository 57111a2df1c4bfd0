import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VoiceConnection, wsUrl } from '../src/connection.js';

class FakeSocket {
  static all = [];

  constructor(url) {
    this.url = url;
    this.sent = [];
    this.readyState = 0;
    FakeSocket.all.push(this);
  }

  accept() {
    this.readyState = 1;
    this.onopen();
  }

  message(obj) { this.onmessage({ data: JSON.stringify(obj) }); }

  drop(code = 1006) {
    this.readyState = 3;
    this.onclose({ code });
  }

  send(data) { this.sent.push(data); }

  close() { this.drop(1000); }
}

function manualTimers() {
  const pending = new Map();
  let next = 1;
  return {
    pending,
    set: (fn, ms) => { pending.set(next, { fn, ms }); next += 1; return next - 1; },
    clear: (id) => pending.delete(id),
    runSoonest() { // the reconnect backoff, not the token refresh due in minutes
      const [id, job] = [...pending.entries()].sort((a, b) => a[1].ms - b[1].ms)[0];
      pending.delete(id);
      job.fn();
    },
  };
}

function fakeFetch(log, responses) {
  return async (url, init) => {
    log.push([init.method, url, init.headers, init.body ? JSON.parse(init.body) : null]);
    const [status, body] = responses.shift();
    return { status, ok: status < 300, json: async () => body };
  };
}

const flush = () => new Promise((resolve) => setImmediate(resolve));

function setup(responses, options = {}) {
  FakeSocket.all = [];
  const calls = [];
  const events = [];
  const statuses = [];
  const timers = manualTimers();
  const conn = new VoiceConnection({
    endpoint: 'http://voice.test', project: 'demo', base: 'http://site.test/page', WebSocket: FakeSocket,
    fetch: fakeFetch(calls, responses), timers, pingMs: 0,
    onEvent: (e) => events.push(e), onStatus: (s) => statuses.push(s), ...options,
  });
  return { conn, calls, events, statuses, timers };
}

const SESSION = { session_id: 's1', token: 'tok1', token_expires_in: 900, websocket_url: '/api/v1/voice/ws/s1' };

test('websocket URLs follow the endpoint scheme; absolute ones (WS_PORT) are kept', () => {
  assert.equal(wsUrl('https://a.test', '/ws/1', 'http://x/'), 'wss://a.test/ws/1');
  assert.equal(wsUrl('', '/ws/1', 'http://page.test:8080/x'), 'ws://page.test:8080/ws/1');
  assert.equal(wsUrl('http://a.test', 'ws://a.test:9000/ws/1', 'http://x/'), 'ws://a.test:9000/ws/1');
});

test('open() creates the session, connects with the token and flushes frames queued meanwhile', async () => {
  const { conn, calls } = setup([[201, SESSION]]);
  const opened = conn.open();
  conn.sendFrame(new ArrayBuffer(640));
  await flush();
  assert.deepEqual(calls[0].slice(0, 2), ['POST', 'http://voice.test/api/v1/voice/sessions']);
  const socket = FakeSocket.all[0];
  assert.equal(socket.url, 'ws://voice.test/api/v1/voice/ws/s1?token=tok1&mode=hands_free');
  socket.accept();
  await opened;
  assert.equal(socket.sent.length, 1);
  assert.equal(conn.audioUrl('/api/v1/voice/sessions/s1/audio/a1'),
    'http://voice.test/api/v1/voice/sessions/s1/audio/a1?token=tok1');
});

test('after a drop it reconnects with last_seq and ignores events it already has', async () => {
  const { conn, events, statuses, timers } = setup([[201, SESSION]]);
  const opened = conn.open();
  await flush();
  FakeSocket.all[0].accept();
  await opened;
  FakeSocket.all[0].message({ seq: 1, type: 'status' });
  FakeSocket.all[0].message({ seq: 2, type: 'transcript' });
  FakeSocket.all[0].drop();
  assert.equal(statuses.at(-1), 'reconnecting');
  timers.runSoonest();
  await flush();
  const again = FakeSocket.all[1];
  assert.equal(again.url, 'ws://voice.test/api/v1/voice/ws/s1?token=tok1&mode=hands_free&last_seq=2');
  again.accept();
  again.message({ seq: 2, type: 'transcript' });
  again.message({ seq: 3, type: 'reply' });
  again.message({ seq: null, type: 'accepted', turn_id: 't' });
  assert.deepEqual(events.map((e) => e.seq), [1, 2, 3, null]);
});

test('a drop before any event still resumes from last_seq=0 (events during the gap are replayed)', async () => {
  const { conn, timers } = setup([[201, SESSION]]);
  const opened = conn.open();
  await flush();
  FakeSocket.all[0].accept();
  await opened;
  FakeSocket.all[0].drop();
  timers.runSoonest();
  await flush();
  assert.equal(FakeSocket.all[1].url, 'ws://voice.test/api/v1/voice/ws/s1?token=tok1&mode=hands_free&last_seq=0');
});

test('a refused socket (1008) refreshes the token before reconnecting', async () => {
  const { conn, calls, timers } = setup([[201, SESSION], [200, { ...SESSION, token: 'tok2' }]]);
  const opened = conn.open();
  await flush();
  FakeSocket.all[0].accept();
  await opened;
  FakeSocket.all[0].drop(1008);
  timers.runSoonest();
  for (let i = 0; i < 4; i += 1) await flush();
  assert.deepEqual(calls[1].slice(0, 2), ['POST', 'http://voice.test/api/v1/voice/sessions/s1/token']);
  assert.equal(calls[1][2].Authorization, 'Bearer tok1');
  assert.match(FakeSocket.all[1].url, /token=tok2/);
});

test('a session that cannot be refreshed is replaced by a new one', async () => {
  const { conn, events, timers } = setup([
    [201, SESSION], [404, { error: { code: 'session_not_found', message: 'gone' } }],
    [201, { ...SESSION, session_id: 's2', token: 'tok3', websocket_url: '/api/v1/voice/ws/s2' }],
  ]);
  const opened = conn.open();
  await flush();
  FakeSocket.all[0].accept();
  await opened;
  FakeSocket.all[0].message({ seq: 7, type: 'done' });
  FakeSocket.all[0].drop(1008);
  timers.runSoonest();
  for (let i = 0; i < 4; i += 1) await flush();
  assert.deepEqual(events.at(-1), { type: 'session_reset', seq: null, reason: 'session_not_found' });
  assert.equal(FakeSocket.all[1].url, 'ws://voice.test/api/v1/voice/ws/s2?token=tok3&mode=hands_free');
});

test('renew() forgets an expired session: the next open() creates a new one, the old socket is not resumed', async () => {
  const { conn, calls, timers } = setup([[201, SESSION], [201, { ...SESSION, session_id: 's2', token: 'tok2',
    websocket_url: '/api/v1/voice/ws/s2' }]]);
  const opened = conn.open();
  await flush();
  FakeSocket.all[0].accept();
  await opened;
  conn.renew();
  assert.equal(timers.pending.size, 0, 'no reconnect to the dead session');
  const again = conn.open();
  await flush();
  assert.equal(calls.length, 2);
  assert.equal(FakeSocket.all[1].url, 'ws://voice.test/api/v1/voice/ws/s2?token=tok2&mode=hands_free');
  FakeSocket.all[1].accept();
  await again;
});

test('close() stops for good: no reconnect is scheduled', async () => {
  const { conn, statuses, timers } = setup([[201, SESSION]]);
  const opened = conn.open();
  await flush();
  FakeSocket.all[0].accept();
  await opened;
  conn.close();
  assert.equal(statuses.at(-1), 'closed');
  assert.equal(timers.pending.size, 0);
});

test('a failed session creation surfaces the server error code', async () => {
  const { conn } = setup([[401, { error: { code: 'project_key_required', message: 'needs its key' } }]]);
  await assert.rejects(conn.open(), (err) => err.code === 'project_key_required' && err.status === 401);
});

const UNSUPPORTED = [400, { error: { code: 'language_unsupported', message: 'no model for de' } }];

test('a page language the server cannot serve falls back to the server default', async () => {
  const { conn, calls } = setup([UNSUPPORTED, [201, SESSION]], { language: 'de', languageRequired: false });
  const opened = conn.open();
  await flush();
  FakeSocket.all[0].accept();
  await opened;
  assert.deepEqual(calls.map((c) => c[3]), [{ project: 'demo', language: 'de' }, { project: 'demo' }]);
  assert.equal(conn.session.session_id, 's1');
});

test('a language the embed asked for is never silently dropped', async () => {
  const { conn, calls } = setup([UNSUPPORTED], { language: 'de' });
  await assert.rejects(conn.open(), (err) => err.code === 'language_unsupported');
  assert.equal(calls.length, 1);
});

test('the session view (with the server text cap) is handed on when it is created and refreshed', async () => {
  const seen = [];
  const { conn } = setup([[201, { ...SESSION, text_max_chars: 120 }], [200, { ...SESSION, token: 'tok2' }]],
    { onSession: (view) => seen.push([view.token, view.text_max_chars]) });
  const opened = conn.open();
  await flush();
  FakeSocket.all[0].accept();
  await opened;
  await conn.refreshToken();
  assert.deepEqual(seen, [['tok1', 120], ['tok2', 120]]);
});

test('the server mode rides on the socket URL, and changing it reconnects to apply it', async () => {
  const { conn } = setup([[201, SESSION]]);
  conn.setServerMode('push_to_talk');
  const opened = conn.open();
  await flush();
  const first = FakeSocket.all[0];
  first.accept();
  await opened;
  assert.equal(first.url, 'ws://voice.test/api/v1/voice/ws/s1?token=tok1&mode=push_to_talk');
  let closed = false;
  first.readyState = 1;
  first.close = () => { closed = true; };
  conn.setServerMode('hands_free');
  assert.equal(closed, true);
  assert.equal(conn.serverMode, 'hands_free');
});
