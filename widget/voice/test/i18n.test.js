import assert from 'node:assert/strict';
import { test } from 'node:test';
import { STRINGS, languageTag, sessionLanguage, stringsFor, uiLanguage } from '../src/i18n.js';

test('the embed data-language wins over the page lang', () => {
  assert.equal(sessionLanguage('ru-RU', 'en'), 'ru-RU');
  assert.equal(sessionLanguage('en', 'ru'), 'en');
});

test('without data-language the page lang is used, else the server default (null)', () => {
  assert.equal(sessionLanguage(undefined, 'ru'), 'ru');
  assert.equal(sessionLanguage('', 'en-GB'), 'en-GB');
  assert.equal(sessionLanguage(undefined, ''), null);
  assert.equal(sessionLanguage(undefined, undefined), null);
});

test('values that are no language tag are never sent', () => {
  assert.equal(languageTag('ru; drop'), null);
  assert.equal(languageTag('<ru>'), null);
  assert.equal(sessionLanguage('not a language', 'ru'), 'ru');
});

test('the UI language follows the primary subtag; unknown languages get English', () => {
  assert.equal(uiLanguage('ru'), 'ru');
  assert.equal(uiLanguage('RU-ru'), 'ru');
  assert.equal(uiLanguage('en-US'), 'en');
  assert.equal(uiLanguage('de-DE'), 'en');
  assert.equal(uiLanguage(null), 'en');
  assert.equal(stringsFor('ru-RU'), STRINGS.ru);
  assert.equal(stringsFor('fr'), STRINGS.en);
  assert.equal(stringsFor('ru').status.listening, 'Слушаю…');
});

test('every language has every string the English UI has', () => {
  const shape = (value) => (typeof value === 'object'
    ? Object.fromEntries(Object.entries(value).map(([k, v]) => [k, shape(v)])) : typeof value);
  for (const [name, strings] of Object.entries(STRINGS)) assert.deepEqual(shape(strings), shape(STRINGS.en), name);
});
