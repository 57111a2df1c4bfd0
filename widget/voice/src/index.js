// Entry point: `VoiceWidget.init({...})`, or automatic from the <script data-project=...> tag.
import { VoiceConnection } from './connection.js';
import { ENDPOINTING, VoiceController } from './controller.js';
import { languageTag, sessionLanguage, stringsFor, uiLanguage } from './i18n.js';
import { Microphone } from './microphone.js';
import { BrowserSpeech, ReplyPlayer, WebAudioOutput } from './player.js';
import { WidgetView } from './ui.js';

export const VERSION = '0.1.0';

function emit(host, name, detail) {
  host.dispatchEvent(new CustomEvent(`voicewidget:${name}`, { detail, bubbles: true, composed: true }));
}

function resolveContainer(container) {
  if (!container) return null;
  return typeof container === 'string' ? document.querySelector(container) : container;
}

/** Mount a widget; returns a handle with the controller, the connection and destroy(). */
export function init(options = {}) {
  if (!options.project) throw new Error('VoiceWidget.init needs a project');
  const container = resolveContainer(options.container);
  const host = document.createElement('voiceapp-widget');
  if (container) host.setAttribute('data-inline', '');
  (container || document.body).append(host);

  // The page's language decides the UI and the session unless the embed names one.
  const language = sessionLanguage(options.language, document.documentElement.lang);
  const strings = stringsFor(language);
  let controller = null;
  const microphone = new Microphone({ onFrame: (frame) => controller.onFrame(frame) });
  const connection = new VoiceConnection({
    endpoint: options.endpoint || '', project: options.project, language,
    languageRequired: Boolean(languageTag(options.language)),
    onSession: (session) => view.setMaxTextLength(session.text_max_chars),
    voice: options.voice, onEvent: (message) => controller.onEvent(message),
    onStatus: (status) => {
      view.show({ kind: 'connection', status });
      emit(host, 'connection', { status });
    },
  });
  const player = new ReplyPlayer({
    audio: new WebAudioOutput(() => microphone.audioContext()),
    speech: new BrowserSpeech(),
    fallbackText: (chunk) => controller.fallbackText(chunk),
    onStart: (chunk, how) => controller.playbackStarted(chunk, how),
    onChunk: (chunk) => controller.chunkPlayed(chunk),
    onIdle: () => controller.maybeFinish(),
    onFallback: (chunk, err) => emit(host, 'fallback', { reason: String(err && err.message), index: chunk.index }),
  });
  const mode = options.mode === 'hands-free' ? 'hands-free' : 'push-to-talk';
  const view = new WidgetView(host, {
    mode, title: options.title, strings, language: uiLanguage(language),
    handlers: {
      text: (value) => controller.ask(value),
      press: () => controller.press(),
      release: () => controller.release(),
      stop: () => controller.stop(),
      mode: (next) => { controller.setMode(next); view.setMode(next); },
    },
  });
  controller = new VoiceController({
    connection, player, microphone, mode,
    endpointing: ENDPOINTING.includes(options.endpointing) ? options.endpointing : 'auto',
    bargeIn: options.bargeIn !== false,
    strings,
    onState: (state, detail) => {
      view.setState(state);
      emit(host, 'state', { state, ...detail });
    },
    onView: (update) => {
      view.show(update);
      emit(host, update.kind, update);
    },
  });
  return {
    host, controller, connection, microphone, player,
    destroy() {
      controller.stop();
      connection.close();
      microphone.stop();
      host.remove();
    },
  };
}

/** Options from a <script> tag's data-* attributes (endpoint defaults to the script's own origin). */
export function optionsFromScript(script) {
  const data = script.dataset;
  let endpoint = data.endpoint;
  if (endpoint === undefined && script.src) endpoint = new URL(script.src, location.href).origin;
  return {
    project: data.project, endpoint, mode: data.mode, language: data.language, voice: data.voice,
    endpointing: data.endpointing, container: data.container, title: data.title,
    bargeIn: data.bargeIn !== 'false',
  };
}

function autoInit(script) {
  if (!script || !script.dataset || !script.dataset.project) return;
  const start = () => {
    globalThis.VoiceWidget.instance = init(optionsFromScript(script));
  };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start, { once: true });
  else start();
}

if (typeof window !== 'undefined') {
  window.VoiceWidget = { init, optionsFromScript, VERSION, instance: null };
  autoInit(document.currentScript);
}
