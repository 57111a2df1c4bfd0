import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ReplyPlayer } from '../src/player.js';

function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
  return { promise, resolve, reject };
}

class ManualAudio {
  constructor() {
    this.loads = new Map();
    this.plays = [];
    this.stops = 0;
  }

  load(url) {
    const d = deferred();
    this.loads.set(url, d);
    return d.promise;
  }

  play(buffer, started) {
    const d = deferred();
    this.plays.push({ buffer, end: d.resolve });
    started();
    return d.promise;
  }

  stop() {
    this.stops += 1;
    for (const p of this.plays) p.end();
  }
}

class RecordingSpeech {
  constructor() { this.said = []; this.cancels = 0; }

  speak(text, lang) { this.said.push([text, lang]); return Promise.resolve(); }

  cancel() { this.cancels += 1; }
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

test('chunks play in arrival order even when a later one downloads first', async () => {
  const audio = new ManualAudio();
  const started = [];
  let idle = 0;
  const player = new ReplyPlayer({ audio, speech: new RecordingSpeech(), onStart: (c) => started.push(c.url),
    onIdle: () => { idle += 1; } });
  player.enqueue({ kind: 'audio', url: 'one' });
  player.enqueue({ kind: 'audio', url: 'two' });
  audio.loads.get('two').resolve('buffer-two');
  await tick();
  assert.deepEqual(started, [], 'the second sentence waits for the first');
  audio.loads.get('one').resolve('buffer-one');
  await tick();
  assert.deepEqual(audio.plays.map((p) => p.buffer), ['buffer-one']);
  audio.plays[0].end();
  await tick();
  assert.deepEqual(audio.plays.map((p) => p.buffer), ['buffer-one', 'buffer-two']);
  assert.equal(player.active, true);
  audio.plays[1].end();
  await tick();
  assert.deepEqual(started, ['one', 'two']);
  assert.equal(idle, 1);
  assert.equal(player.active, false);
  assert.equal(player.played, 2);
});

test('a chunk whose audio fails is spoken by the browser, then playback goes on', async () => {
  const audio = new ManualAudio();
  const speech = new RecordingSpeech();
  const fallbacks = [];
  const player = new ReplyPlayer({ audio, speech, onFallback: (c, err, spoken) => fallbacks.push([c.url, spoken]) });
  player.enqueue({ kind: 'audio', url: 'bad', text: 'First sentence.', lang: 'en-US' });
  player.enqueue({ kind: 'audio', url: 'good' });
  audio.loads.get('bad').reject(new Error('HTTP 500'));
  audio.loads.get('good').resolve('buffer-good');
  await tick();
  await tick();
  assert.deepEqual(speech.said, [['First sentence.', 'en-US']]);
  assert.deepEqual(fallbacks, [['bad', true]]);
  assert.deepEqual(audio.plays.map((p) => p.buffer), ['buffer-good']);
});

test('without chunk text the fallback asks for the reply text (autoplay blocked)', async () => {
  const speech = new RecordingSpeech();
  const audio = { load: () => Promise.resolve('buf'), play: () => Promise.reject(new Error('blocked')), stop() {} };
  const player = new ReplyPlayer({ audio, speech, fallbackText: () => 'The whole reply.' });
  player.enqueue({ kind: 'audio', url: 'x' });
  await tick();
  await tick();
  assert.deepEqual(speech.said, [['The whole reply.', undefined]]);
});

test('stop() silences the current chunk and drops the queue', async () => {
  const audio = new ManualAudio();
  const speech = new RecordingSpeech();
  let idle = 0;
  const player = new ReplyPlayer({ audio, speech, onIdle: () => { idle += 1; } });
  player.enqueue({ kind: 'audio', url: 'one' });
  player.enqueue({ kind: 'audio', url: 'two' });
  audio.loads.get('one').resolve('b1');
  audio.loads.get('two').resolve('b2');
  await tick();
  player.stop();
  await tick();
  assert.equal(audio.stops, 1);
  assert.equal(speech.cancels, 1);
  assert.deepEqual(audio.plays.map((p) => p.buffer), ['b1']);
  assert.equal(player.active, false);
  assert.equal(idle, 0, 'a stopped reply does not report a natural end');
});
