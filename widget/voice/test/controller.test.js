import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VoiceController } from '../src/controller.js';
import { STRINGS } from '../src/i18n.js';
import { FakeConnection, FakePlayer, LOUD, QUIET, fakeMic } from './fakes.js';

function setup(options = {}) {
  const connection = new FakeConnection();
  const player = new FakePlayer();
  const states = [];
  const views = [];
  const controller = new VoiceController({
    connection, player, microphone: fakeMic, onState: (s) => states.push(s), onView: (v) => views.push(v), ...options,
  });
  return { controller, connection, player, states, views };
}

function feed(controller, make, n) {
  for (let i = 0; i < n; i += 1) controller.onFrame(make());
}

let seq = 0;
function event(type, turnId, data = {}) {
  seq += 1;
  return { seq, type, session_id: 's1', turn_id: turnId, ts: 0, ...data };
}

/** What the server publishes for one recognised utterance, up to its audio (not `done`). */
function answer(controller, turnId = 't1', { accepted = true } = {}) {
  if (accepted) controller.onEvent({ type: 'accepted', seq: null, turn_id: turnId });
  controller.onEvent(event('transcript', turnId, { text: 'What time do you open?', final: true }));
  controller.onEvent(event('reply', turnId, { text: 'We open at 8. Welcome!', suggested_actions: [] }));
  controller.onEvent(event('audio', turnId, { audio_url: '/a/1', provider: 'piper', text: 'We open at 8.' }));
  controller.onEvent(event('audio', turnId, { audio_url: '/a/2', provider: 'piper', text: 'Welcome!' }));
}

function pushToTalk(controller, frames = 10, turnId = 't1') {
  controller.press();
  controller.onEvent(event('status', turnId, { status: 'listening' }));
  feed(controller, LOUD, frames);
  controller.release();
}

function finishPlayback(controller, player) {
  player.playing = false;
  controller.maybeFinish();
}

test('push-to-talk: frames stream while held, release sends end, the reply plays, then idle', () => {
  const { controller, connection, player, states, views } = setup();
  controller.press();
  assert.equal(controller.state, 'listening');
  feed(controller, LOUD, 10);
  assert.equal(connection.frames.length, 10);
  controller.release();
  assert.deepEqual(connection.controls('end'), [{ type: 'end' }]);
  assert.equal(controller.state, 'thinking');
  feed(controller, LOUD, 5); // the reply is being prepared: nothing more is streamed
  assert.equal(connection.frames.length, 10);
  answer(controller);
  assert.deepEqual(player.chunks.map((c) => c.url), ['/a/1?token=tok', '/a/2?token=tok']);
  assert.ok(views.some((v) => v.kind === 'transcript' && v.final && v.text === 'What time do you open?'));
  assert.ok(views.some((v) => v.kind === 'reply' && v.text === 'We open at 8. Welcome!'));
  controller.playbackStarted(player.chunks[0], 'audio');
  assert.equal(controller.state, 'speaking');
  controller.onEvent(event('done', 't1', { status: 'done' }));
  assert.equal(controller.state, 'speaking', 'still playing: done alone does not end the turn');
  finishPlayback(controller, player);
  assert.deepEqual(states, ['listening', 'thinking', 'speaking', 'idle']);
});

test('push-to-talk: a release with no audio sends nothing', () => {
  const { controller, connection } = setup();
  controller.press();
  controller.release();
  assert.deepEqual(connection.controls('end'), []);
  assert.equal(controller.state, 'idle');
});

test('a pause while holding splits the speech into two turns: both are answered, then idle', () => {
  const { controller, player, views } = setup();
  controller.press();
  controller.onEvent(event('status', 't1', { status: 'listening' }));
  feed(controller, LOUD, 10);
  answer(controller, 't1', { accepted: false }); // the server ended t1 at the pause
  assert.equal(controller.state, 'listening', 'still holding: keep listening');
  controller.onEvent(event('status', 't2', { status: 'listening' }));
  feed(controller, LOUD, 10);
  controller.release();
  controller.onEvent({ type: 'accepted', seq: null, turn_id: 't2' });
  controller.onEvent(event('done', 't1', { status: 'done' }));
  controller.onEvent(event('done', 't2', { status: 'no_speech' }));
  assert.equal(player.chunks.length, 2, 't1 is played');
  finishPlayback(controller, player);
  assert.equal(controller.state, 'idle');
  assert.ok(!views.some((v) => v.kind === 'notice'), 'an answered exchange is no "did not catch that"');
});

test('an utterance with no speech ends with a notice', () => {
  const { controller, views } = setup();
  pushToTalk(controller);
  controller.onEvent({ type: 'accepted', seq: null, turn_id: 't1' });
  controller.onEvent(event('done', 't1', { status: 'no_speech' }));
  assert.equal(controller.state, 'idle');
  assert.ok(views.some((v) => v.kind === 'notice'));
});

test('partial transcripts are shown as partial, then replaced by the final one', () => {
  const { controller, views } = setup();
  controller.press();
  controller.onEvent(event('status', 't1', { status: 'listening' }));
  feed(controller, LOUD, 3);
  controller.onEvent(event('transcript', 't1', { text: 'what time', final: false }));
  controller.release();
  controller.onEvent({ type: 'accepted', seq: null, turn_id: 't1' });
  controller.onEvent(event('transcript', 't1', { text: 'what time do you open', final: true }));
  const transcripts = views.filter((v) => v.kind === 'transcript');
  assert.deepEqual(transcripts.map((v) => [v.text, v.final]), [['what time', false], ['what time do you open', true]]);
});

test('hands-free, client endpointing: only speech is streamed and 800 ms of quiet sends end', () => {
  const { controller, connection } = setup({ mode: 'hands-free', endpointing: 'client' });
  controller.press();
  assert.equal(controller.state, 'listening');
  feed(controller, QUIET, 30);
  assert.equal(connection.frames.length, 0, 'silence before speech stays local');
  feed(controller, LOUD, 50);
  assert.ok(connection.frames.length >= 50, 'speech (with its pre-roll) is streamed');
  feed(controller, QUIET, 39);
  assert.deepEqual(connection.controls('end'), []);
  feed(controller, QUIET, 1);
  assert.deepEqual(connection.controls('end'), [{ type: 'end' }]);
  assert.equal(controller.state, 'thinking');
});

test('hands-free, auto: the server ends the utterance (final transcript) before the local fallback', () => {
  const { controller, connection, player } = setup({ mode: 'hands-free' });
  controller.press();
  feed(controller, LOUD, 50);
  controller.onEvent(event('status', 't1', { status: 'listening' }));
  feed(controller, QUIET, 60); // 1.2 s: the server's pause, not yet the client's 1.5 s
  assert.deepEqual(connection.controls('end'), []);
  controller.onEvent(event('transcript', 't1', { text: 'What time do you open?', final: true }));
  assert.equal(controller.state, 'thinking');
  assert.deepEqual(connection.controls('end'), [{ type: 'end' }], 'what we streamed is closed by us too');
  const sent = connection.frames.length;
  feed(controller, QUIET, 30);
  assert.equal(connection.frames.length, sent, 'nothing streams while the answer is prepared');
  answer(controller, 't1', { accepted: false });
  controller.onEvent({ type: 'accepted', seq: null, turn_id: 't1' }); // our late end: a no-op on the server
  controller.onEvent(event('done', 't1', { status: 'done' }));
  controller.playbackStarted(player.chunks[0], 'audio');
  finishPlayback(controller, player);
  assert.equal(controller.state, 'listening', 'hands-free goes back to listening');
});

test('hands-free, auto: without a server decision the client ends the utterance after 1.5 s', () => {
  const { controller, connection } = setup({ mode: 'hands-free' });
  controller.press();
  feed(controller, LOUD, 20);
  feed(controller, QUIET, 74);
  assert.deepEqual(connection.controls('end'), []);
  feed(controller, QUIET, 1);
  assert.deepEqual(connection.controls('end'), [{ type: 'end' }]);
});

test('hands-free, server endpointing: everything is streamed and no end is sent', () => {
  const { controller, connection } = setup({ mode: 'hands-free', endpointing: 'server' });
  controller.press();
  feed(controller, QUIET, 100);
  feed(controller, LOUD, 50);
  feed(controller, QUIET, 100);
  assert.equal(connection.frames.length, 250);
  assert.deepEqual(connection.controls('end'), []);
});

test('an end that crossed the server endpointing (empty_utterance) is not an error', () => {
  const { controller, views } = setup({ mode: 'hands-free' });
  controller.press();
  controller.onEvent({ type: 'error', seq: null, code: 'empty_utterance', message: 'no audio' });
  assert.equal(controller.state, 'listening');
  assert.ok(!views.some((v) => v.kind === 'error'));
});

test('barge-in by voice: the reply stops, interrupt names the turn and the chunks played', () => {
  const { controller, connection, player } = setup({ mode: 'hands-free', endpointing: 'client' });
  controller.press();
  feed(controller, LOUD, 10);
  feed(controller, QUIET, 40);
  answer(controller, 't1');
  controller.playbackStarted(player.chunks[0], 'audio');
  controller.chunkPlayed(player.chunks[0]);
  controller.playbackStarted(player.chunks[1], 'audio');
  feed(controller, LOUD, 10); // 200 ms: not yet a barge-in (echo, coughs)
  assert.equal(player.stopped, 0);
  feed(controller, LOUD, 5);
  assert.equal(player.stopped, 1);
  assert.deepEqual(connection.controls('interrupt'), [{ type: 'interrupt', turn_id: 't1', played_chunks: 1 }]);
  assert.equal(controller.state, 'listening');
  assert.ok(controller.streaming, 'the barge-in speech is streamed as the next utterance');
  const chunks = player.chunks.length;
  controller.onEvent(event('audio', 't1', { audio_url: '/a/3', provider: 'piper' }));
  assert.equal(player.chunks.length, chunks, 'late audio of the interrupted turn is dropped');
});

test('barge-in by pressing: push-to-talk during a reply interrupts it and listens', () => {
  const { controller, connection, player } = setup();
  pushToTalk(controller);
  answer(controller, 't1');
  controller.playbackStarted(player.chunks[0], 'audio');
  controller.press();
  assert.equal(player.stopped, 1);
  assert.equal(connection.controls('interrupt')[0].turn_id, 't1');
  assert.equal(controller.state, 'listening');
});

test('the browser provider hands the text to speechSynthesis', () => {
  const { controller, player } = setup();
  pushToTalk(controller);
  controller.onEvent({ type: 'accepted', seq: null, turn_id: 't1' });
  controller.onEvent(event('reply', 't1', { text: 'Bonjour.' }));
  controller.onEvent(event('audio', 't1', { provider: 'browser', text: 'Bonjour.', language: 'fr-FR', voice: null }));
  assert.deepEqual(player.chunks.map((c) => [c.kind, c.text, c.lang]), [['speech', 'Bonjour.', 'fr-FR']]);
});

test('a failed synthesis falls back to speaking the reply text in the browser', () => {
  const { controller, player, views } = setup();
  pushToTalk(controller);
  controller.onEvent({ type: 'accepted', seq: null, turn_id: 't1' });
  controller.onEvent(event('reply', 't1', { text: 'We open at 8.' }));
  controller.onEvent(event('error', 't1', { stage: 'tts', code: 'tts_failed', message: 'provider down' }));
  assert.deepEqual(player.chunks.map((c) => [c.kind, c.text]), [['speech', 'We open at 8.']]);
  assert.ok(views.some((v) => v.kind === 'error'));
  assert.equal(controller.fallbackText({ turnId: 't1' }), null, 'the reply is spoken once, not per chunk');
});

test('turn events that arrive before accepted are kept', () => {
  const { controller, views } = setup();
  pushToTalk(controller, 5, 't9');
  controller.onEvent(event('transcript', 't9', { text: 'hello', final: true }));
  controller.onEvent({ type: 'accepted', seq: null, turn_id: 't9' });
  assert.ok(controller.turns.has('t9'));
  assert.ok(views.some((v) => v.kind === 'transcript' && v.text === 'hello'));
});

test('thinking waits for accepted: nothing finishes before the turn is known', () => {
  const { controller } = setup();
  controller.press();
  feed(controller, LOUD, 5);
  controller.release();
  controller.maybeFinish();
  assert.equal(controller.state, 'thinking');
});

test('an expired session is replaced and reported', () => {
  const { controller, connection } = setup();
  controller.press();
  controller.onEvent({ type: 'error', seq: null, code: 'voice_session_expired', message: 'expired' });
  assert.equal(connection.renewed, 1);
  assert.equal(controller.state, 'error');
});

test('Escape (stop) while speaking interrupts and returns to idle', () => {
  const { controller, connection, player } = setup();
  pushToTalk(controller);
  answer(controller, 't1');
  controller.playbackStarted(player.chunks[0], 'audio');
  controller.stop();
  assert.equal(controller.state, 'idle');
  assert.equal(connection.controls('interrupt').length, 1);
});

test('barge-in also works when the user never stopped talking since the question', () => {
  const { controller, connection, player } = setup();
  pushToTalk(controller);
  feed(controller, LOUD, 100); // still talking (the VAD never saw an end)
  answer(controller, 't1');
  controller.playbackStarted(player.chunks[0], 'audio');
  feed(controller, LOUD, 7);
  controller.onFrame(QUIET()); // a dip between syllables
  feed(controller, LOUD, 8);
  assert.equal(player.stopped, 0);
  feed(controller, LOUD, 1);
  assert.equal(player.stopped, 1);
  assert.equal(connection.controls('interrupt').length, 1);
  assert.equal(controller.state, 'idle', 'push-to-talk: wait for the next press');
});

/** What the server publishes for a typed question, up to its audio. */
function typedAnswer(controller, turnId = 'x1', language = 'en-US') {
  controller.onEvent({ type: 'accepted', seq: null, turn_id: turnId });
  controller.onEvent(event('status', turnId, { status: 'thinking' }));
  controller.onEvent(event('transcript', turnId, { text: 'Do you deliver?', final: true, engine: 'text' }));
  controller.onEvent(event('reply', turnId, { text: 'We deliver within 5 km.', language }));
  controller.onEvent(event('audio', turnId, { audio_url: '/a/9', provider: 'piper', text: 'We deliver within 5 km.' }));
}

test('a typed question is sent as a text turn without the microphone, answered, then idle', async () => {
  let micStarted = false;
  const { controller, connection, player, states, views } = setup({
    microphone: { start: () => { micStarted = true; return Promise.resolve(); } },
  });
  assert.equal(controller.ask('  Do you deliver? '), true);
  assert.equal(controller.state, 'thinking');
  await Promise.resolve();
  assert.deepEqual(connection.controls('text'), [{ type: 'text', text: 'Do you deliver?' }]);
  assert.equal(micStarted, false, 'typing never opens the microphone');
  assert.equal(connection.frames.length, 0);
  typedAnswer(controller);
  assert.ok(views.some((v) => v.kind === 'transcript' && v.final && v.text === 'Do you deliver?'));
  assert.ok(views.some((v) => v.kind === 'reply' && v.text === 'We deliver within 5 km.'));
  assert.deepEqual(player.chunks.map((c) => [c.url, c.lang]), [['/a/9?token=tok', 'en-US']]);
  controller.playbackStarted(player.chunks[0], 'audio');
  controller.onEvent(event('done', 'x1', { status: 'done' }));
  finishPlayback(controller, player);
  assert.deepEqual(states, ['thinking', 'speaking', 'idle']);
});

test('an empty typed question is not sent', async () => {
  const { controller, connection } = setup();
  assert.equal(controller.ask('   '), false);
  assert.equal(controller.ask(undefined), false);
  await Promise.resolve();
  assert.deepEqual(connection.controls('text'), []);
  assert.equal(controller.state, 'idle');
});

test('typing in hands-free mode without a conversation returns to idle, not to listening', async () => {
  const { controller, player } = setup({ mode: 'hands-free' });
  controller.ask('Do you deliver?');
  await Promise.resolve();
  typedAnswer(controller);
  controller.onEvent(event('done', 'x1', { status: 'done' }));
  finishPlayback(controller, player);
  assert.equal(controller.state, 'idle');
});

test('typing during a hands-free conversation interrupts the reply and listens again afterwards', async () => {
  const { controller, connection, player } = setup({ mode: 'hands-free', endpointing: 'client' });
  controller.press();
  feed(controller, LOUD, 10);
  feed(controller, QUIET, 45);
  answer(controller);
  controller.playbackStarted(player.chunks[0], 'audio');
  controller.ask('And on Sunday?');
  assert.equal(player.stopped, 1, 'the reply being played stops');
  assert.deepEqual(connection.controls('interrupt').map((m) => m.turn_id), ['t1']);
  await Promise.resolve();
  assert.deepEqual(connection.controls('text').map((m) => m.text), ['And on Sunday?']);
  typedAnswer(controller, 'x2');
  controller.onEvent(event('done', 'x2', { status: 'done' }));
  finishPlayback(controller, player);
  assert.equal(controller.state, 'listening');
});

test('a typed question the server refuses says why in the widget language', async () => {
  const { controller, views } = setup({ strings: STRINGS.ru });
  controller.ask('x'.repeat(600));
  await Promise.resolve();
  controller.onEvent({ type: 'error', seq: null, code: 'text_too_long', message: 'longer than VOICE_TEXT_MAX_CHARS' });
  assert.equal(controller.state, 'error');
  assert.ok(views.some((v) => v.kind === 'error' && v.code === 'text_too_long' && v.text === STRINGS.ru.errors.text_too_long));
});

test('an error the widget has no words for shows the server message', async () => {
  const { controller, views } = setup();
  controller.ask('Do you deliver?');
  await Promise.resolve();
  controller.onEvent({ type: 'error', seq: null, code: 'storage_unavailable', message: 'retry in a few seconds' });
  assert.ok(views.some((v) => v.kind === 'error' && v.text === 'retry in a few seconds'));
});

test('a typed question fails clearly when the socket cannot open', async () => {
  const { controller, connection } = setup();
  connection.open = () => Promise.reject(Object.assign(new Error('offline'), { code: 'ws_closed' }));
  controller.ask('Do you deliver?');
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(controller.state, 'error');
});

test('messages come in the widget language', () => {
  const { controller, views } = setup({ strings: STRINGS.ru });
  pushToTalk(controller);
  controller.onEvent({ type: 'accepted', seq: null, turn_id: 't1' });
  controller.onEvent(event('done', 't1', { status: 'no_speech' }));
  assert.ok(views.some((v) => v.kind === 'notice' && v.text === STRINGS.ru.notHeard));
});

test('the abandoned-turn list stays small over a long conversation', () => {
  const { controller, player } = setup();
  for (let i = 0; i < 200; i += 1) {
    const id = `t${i}`;
    pushToTalk(controller, 3, id);
    answer(controller, id);
    controller.onEvent(event('done', id, { status: 'done' }));
    finishPlayback(controller, player);
    assert.equal(controller.state, 'idle');
  }
  assert.ok(controller.abandoned.size <= 64, `${controller.abandoned.size} ids kept`);
  assert.ok(controller.abandoned.has('t199'), 'the latest turns are still remembered');
});

test('an interrupted turn ignores its late events, and its done releases its id', () => {
  const { controller, player, views } = setup();
  pushToTalk(controller);
  answer(controller);
  controller.playbackStarted(player.chunks[0], 'audio');
  controller.press(); // barge-in: t1 is abandoned
  assert.ok(controller.abandoned.has('t1'));
  const shown = views.length;
  controller.onEvent(event('audio', 't1', { audio_url: '/a/3', provider: 'piper', text: 'late' }));
  controller.onEvent(event('done', 't1', { status: 'interrupted' }));
  assert.equal(views.length, shown, 'nothing of t1 is shown any more');
  assert.equal(player.chunks.filter((c) => c.url === '/a/3?token=tok').length, 0);
  assert.equal(controller.abandoned.has('t1'), false);
  assert.equal(controller.turns.has('t1'), false);
});
