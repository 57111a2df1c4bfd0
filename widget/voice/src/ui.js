// The widget's DOM: one button, a mode switch, a text box, live regions; all inside a shadow root so
// the host page's CSS neither breaks it nor is touched by it.
import { STRINGS } from './i18n.js';
import { safeActionUrl } from './links.js';

const CSS = `
:host { all: initial; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b1f24; }
.vw { position: fixed; right: 20px; bottom: 20px; z-index: 2147483000; width: 320px; max-width: calc(100vw - 40px);
  background: #fff; border: 1px solid #d0d7de; border-radius: 14px; box-shadow: 0 8px 28px rgba(0,0,0,.18);
  padding: 14px; box-sizing: border-box; }
:host([data-inline]) .vw { position: static; box-shadow: none; }
.vw-top { display: flex; align-items: center; gap: 12px; }
.vw-mic { width: 56px; height: 56px; border-radius: 50%; border: 0; cursor: pointer; flex: none;
  background: #0b6bcb; color: #fff; display: grid; place-items: center; touch-action: none; user-select: none; }
.vw-mic:focus-visible { outline: 3px solid #ffb000; outline-offset: 3px; }
.vw-mic svg { width: 26px; height: 26px; fill: currentColor; }
.vw[data-state="listening"] .vw-mic { background: #c62828; animation: vw-pulse 1.2s infinite; }
.vw[data-state="thinking"] .vw-mic { background: #6a4fb3; }
.vw[data-state="speaking"] .vw-mic { background: #1f883d; }
.vw[data-state="error"] .vw-mic { background: #7d4e00; }
@keyframes vw-pulse { 0%,100% { box-shadow: 0 0 0 0 rgba(198,40,40,.5); } 50% { box-shadow: 0 0 0 10px rgba(198,40,40,0); } }
@media (prefers-reduced-motion: reduce) { .vw[data-state="listening"] .vw-mic { animation: none; } }
.vw-status { font-weight: 600; }
.vw-mode { display: flex; align-items: center; gap: 6px; font-size: 13px; margin-top: 2px; }
.vw-log { margin-top: 10px; display: grid; gap: 6px; }
.vw-you:empty, .vw-reply:empty, .vw-error:empty, .vw-notice:empty { display: none; }
.vw-you { color: #57606a; }
.vw-you .vw-partial { font-style: italic; opacity: .75; }
.vw-reply { background: #f3f6f9; border-radius: 10px; padding: 8px 10px; }
.vw-error { color: #a40e26; }
.vw-notice { color: #57606a; font-style: italic; }
.vw-actions { display: flex; flex-wrap: wrap; gap: 6px; padding: 0; margin: 0; list-style: none; }
.vw-actions a { color: #0b6bcb; }
.vw-hint { font-size: 12px; color: #57606a; }
.vw-type { display: flex; gap: 6px; margin-top: 10px; }
.vw-type input { flex: 1; min-width: 0; font: inherit; padding: 6px 8px; border: 1px solid #8c959f; border-radius: 8px; }
.vw-type button { font: inherit; padding: 6px 10px; border: 0; border-radius: 8px; background: #0b6bcb; color: #fff;
  cursor: pointer; }
.vw-type input:focus-visible, .vw-type button:focus-visible { outline: 3px solid #ffb000; outline-offset: 1px; }
.vw-sr { position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px; overflow: hidden;
  clip: rect(0 0 0 0); white-space: nowrap; border: 0; }
`;

const MIC_ICON = '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false"><path d="M12 14a3 3 0 0 0 3-3V5a3 3 0 '
  + '0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.92V21h2v-3.08A7 7 0 0 0 19 11h-2z"/></svg>';

function el(tag, className, attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

/** Renders state and session content; forwards the user's presses to `handlers`. */
export class WidgetView {
  constructor(host, { mode, handlers, title, strings = STRINGS.en, language = 'en', maxTextLength = 500 }) {
    this.host = host;
    this.handlers = handlers;
    this.strings = strings;
    const root = host.attachShadow({ mode: 'open' });
    const style = el('style');
    style.textContent = CSS;
    this.panel = el('section', 'vw', { 'aria-label': title || strings.title, lang: language });
    const top = el('div', 'vw-top');
    this.button = el('button', 'vw-mic', { type: 'button' });
    this.button.innerHTML = MIC_ICON;
    const side = el('div');
    this.status = el('div', 'vw-status', { role: 'status', 'aria-live': 'polite' });
    const modeLabel = el('label', 'vw-mode');
    this.modeBox = el('input', '', { type: 'checkbox' });
    modeLabel.append(this.modeBox, document.createTextNode(strings.handsFree));
    this.hint = el('div', 'vw-hint');
    side.append(this.status, modeLabel, this.hint);
    top.append(this.button, side);
    const log = el('div', 'vw-log');
    this.you = el('div', 'vw-you', { 'aria-live': 'polite' });
    this.reply = el('div', 'vw-reply', { 'aria-live': 'polite' });
    this.actions = el('ul', 'vw-actions');
    this.notice = el('div', 'vw-notice');
    this.error = el('div', 'vw-error', { role: 'alert' });
    log.append(this.you, this.reply, this.actions, this.notice, this.error);
    this.panel.append(top, log, this.textForm(maxTextLength));
    root.append(style, this.panel);
    this.bind();
    this.setMode(mode);
    this.setState('idle');
  }

  /** The text box for visitors who cannot or do not want to speak: Enter (or Send) asks. */
  textForm(maxLength) {
    const form = el('form', 'vw-type');
    const label = el('label', 'vw-sr', { for: 'vw-text' });
    label.textContent = this.strings.textLabel;
    this.textBox = el('input', '', {
      id: 'vw-text', type: 'text', name: 'text', maxlength: String(maxLength), autocomplete: 'off',
      enterkeyhint: 'send', placeholder: this.strings.textPlaceholder,
    });
    const send = el('button', '', { type: 'submit' });
    send.textContent = this.strings.send;
    form.append(label, this.textBox, send);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      if (this.handlers.text && this.handlers.text(this.textBox.value)) this.textBox.value = '';
    });
    return form;
  }

  /** The server's cap on typed questions (VOICE_TEXT_MAX_CHARS), learnt with the session. */
  setMaxTextLength(chars) {
    if (Number.isInteger(chars) && chars > 0) this.textBox.setAttribute('maxlength', String(chars));
  }

  bind() {
    const { button, handlers } = this;
    const isTalkKey = (event) => event.key === ' ' || event.key === 'Enter';
    // Push-to-talk follows the pointer / key being held; hands-free is a plain toggle (press).
    button.addEventListener('pointerdown', (event) => {
      if (event.button !== 0) return;
      event.preventDefault();
      button.focus();
      if (button.setPointerCapture && event.pointerId !== undefined) {
        try { button.setPointerCapture(event.pointerId); } catch { /* synthetic pointer */ }
      }
      handlers.press();
    });
    button.addEventListener('pointerup', () => handlers.release());
    button.addEventListener('pointercancel', () => handlers.release());
    button.addEventListener('keydown', (event) => {
      if (!isTalkKey(event)) return;
      event.preventDefault(); // no synthetic click, no page scroll
      if (!event.repeat) handlers.press();
    });
    button.addEventListener('keyup', (event) => {
      if (!isTalkKey(event)) return;
      event.preventDefault();
      handlers.release();
    });
    this.panel.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') handlers.stop();
    });
    this.modeBox.addEventListener('change', () => handlers.mode(this.modeBox.checked ? 'hands-free' : 'push-to-talk'));
  }

  setMode(mode) {
    this.mode = mode;
    this.modeBox.checked = mode === 'hands-free';
    this.host.dataset.mode = mode;
    this.hint.textContent = this.strings.hint[mode];
    this.setState(this.state || 'idle');
  }

  setState(state) {
    this.state = state;
    this.panel.dataset.state = state;
    this.host.dataset.state = state;
    const label = this.strings.labels[this.mode][state];
    this.button.setAttribute('aria-label', label);
    this.button.title = label;
    if (this.mode === 'hands-free') this.button.setAttribute('aria-pressed', String(state !== 'idle' && state !== 'error'));
    else this.button.setAttribute('aria-pressed', String(state === 'listening'));
    this.status.textContent = this.strings.status[state];
    if (state === 'listening') {
      this.error.textContent = '';
      this.notice.textContent = '';
    }
  }

  /** Apply one view update from the controller. */
  show(update) {
    switch (update.kind) {
      case 'transcript': this.showTranscript(update.text, update.final); break;
      case 'reply': this.showReply(update.text, update.actions); break;
      case 'error': this.error.textContent = update.text; break;
      case 'notice': this.notice.textContent = update.text; break;
      case 'connection':
        this.notice.textContent = update.status === 'reconnecting' ? this.strings.reconnecting : '';
        break;
      default: break;
    }
  }

  showTranscript(text, final) {
    this.you.textContent = '';
    if (!text) return;
    const label = document.createTextNode(this.strings.you);
    const span = el('span', final ? 'vw-final' : 'vw-partial');
    span.textContent = text;
    this.you.append(label, span);
    if (final) {
      this.reply.textContent = '';
      this.actions.textContent = '';
    }
  }

  showReply(text, actions = []) {
    this.reply.textContent = text;
    this.actions.textContent = '';
    for (const action of actions) {
      const url = safeActionUrl(action && action.url);
      if (!url) continue;
      const item = el('li');
      const link = el('a', '', { href: url });
      link.textContent = action.label || action.title || action.url;
      item.append(link);
      this.actions.append(item);
    }
  }
}
