import assert from 'node:assert/strict';
import { test } from 'node:test';
import { safeActionUrl } from '../src/links.js';

test('action links: site paths and http(s) URLs pass', () => {
  assert.equal(safeActionUrl('/menu'), '/menu');
  assert.equal(safeActionUrl('/'), '/');
  assert.equal(safeActionUrl('https://shop.example/contact'), 'https://shop.example/contact');
  assert.equal(safeActionUrl(' http://shop.example/ '), 'http://shop.example/');
});

test('action links: protocol-relative, script and other schemes are refused', () => {
  for (const url of ['//evil.example/x', '/\\evil.example/x', 'javascript:alert(1)', 'data:text/html,x',
    'JAVASCRIPT:alert(1)', 'menu', '', 'https://', null, undefined, 42, { url: '/x' }]) {
    assert.equal(safeActionUrl(url), null, String(url));
  }
});
