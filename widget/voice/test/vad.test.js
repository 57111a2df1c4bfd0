import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EnergyVad } from '../src/vad.js';

function run(vad, levels) {
  return levels.map((level) => vad.push(level));
}

const repeat = (value, n) => Array(n).fill(value);

test('speech starts after 120 ms of loud frames and ends after 800 ms of quiet', () => {
  const vad = new EnergyVad();
  const events = run(vad, [...repeat(-90, 50), ...repeat(-20, 50), ...repeat(-90, 60)]);
  assert.equal(events.indexOf('start'), 50 + 5);
  assert.equal(events.indexOf('end'), 100 + 39);
  assert.equal(events.filter(Boolean).length, 2);
});

test('a short click does not count as speech', () => {
  const vad = new EnergyVad();
  assert.deepEqual(run(vad, [...repeat(-90, 20), ...repeat(-10, 3), ...repeat(-90, 60)]).filter(Boolean), []);
});

test('steady background noise below the absolute floor never starts speech', () => {
  const vad = new EnergyVad();
  assert.deepEqual(run(vad, repeat(-55, 500)).filter(Boolean), []);
});

test('the noise floor adapts: speech must stand out from a loud room', () => {
  const vad = new EnergyVad();
  run(vad, repeat(-40, 1500)); // a loud room for 30 s is learned as noise by the slow rise
  assert.ok(vad.threshold() > -35, `threshold ${vad.threshold()}`);
  const events = run(vad, [...repeat(-40, 50), ...repeat(-15, 20)]);
  assert.equal(events.filter(Boolean)[0], 'start');
});

test('a longer start requirement (barge-in) needs more loud frames', () => {
  const vad = new EnergyVad();
  run(vad, repeat(-90, 20));
  const events = [...repeat(-20, 14)].map((l) => vad.push(l, 300));
  assert.deepEqual(events.filter(Boolean), []);
  assert.equal(vad.push(-20, 300), 'start');
});
