// The widget's words in each language it speaks, and how it picks one: the embed's data-language
// first, then the page's <html lang>, else English. No DOM here, so it is unit-tested in node.

const LANGUAGE_TAG = /^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})?$/;

export const STRINGS = Object.freeze({
  en: Object.freeze({
    title: 'Voice assistant',
    labels: {
      'push-to-talk': {
        idle: 'Hold to talk', listening: 'Listening: release to send', thinking: 'Thinking: press to cancel',
        speaking: 'Speaking: press to interrupt', error: 'Error: hold to try again',
      },
      'hands-free': {
        idle: 'Start hands-free conversation', listening: 'Listening: press to stop',
        thinking: 'Thinking: press to stop', speaking: 'Speaking: talk or press to interrupt',
        error: 'Error: press to try again',
      },
    },
    status: { idle: 'Ready', listening: 'Listening…', thinking: 'Thinking…', speaking: 'Speaking…', error: 'Error' },
    handsFree: 'Hands-free',
    hint: {
      'push-to-talk': 'Hold the button (or Space) while you talk. Esc stops.',
      'hands-free': 'Press once and talk; I answer when you pause. Esc stops.',
    },
    you: 'You: ',
    reconnecting: 'Connection lost, reconnecting…',
    notHeard: "Sorry, I didn't catch that.",
    expired: 'The conversation expired. Press the button to start again.',
    reset: 'The connection was reset. Ask again.',
    failed: 'Something went wrong.',
    textLabel: 'Type your question',
    textPlaceholder: 'Or type a question…',
    send: 'Send',
    // What a visitor can do about the server's refusals (its own messages name settings, not remedies).
    errors: {
      invalid_text: 'Please type a question first.',
      text_too_long: 'That question is too long: please shorten it.',
      rate_limited: 'Too many questions at once: please wait a moment.',
      busy: 'The assistant is busy: please try again in a few seconds.',
      voice_concurrency_limit: 'The assistant is busy: please try again in a minute.',
    },
  }),
  ru: Object.freeze({
    title: 'Голосовой помощник',
    labels: {
      'push-to-talk': {
        idle: 'Удерживайте, чтобы говорить', listening: 'Слушаю: отпустите, чтобы отправить',
        thinking: 'Думаю: нажмите, чтобы отменить', speaking: 'Отвечаю: нажмите, чтобы прервать',
        error: 'Ошибка: удерживайте, чтобы повторить',
      },
      'hands-free': {
        idle: 'Начать разговор без рук', listening: 'Слушаю: нажмите, чтобы остановить',
        thinking: 'Думаю: нажмите, чтобы остановить', speaking: 'Отвечаю: говорите или нажмите, чтобы прервать',
        error: 'Ошибка: нажмите, чтобы повторить',
      },
    },
    status: { idle: 'Готов', listening: 'Слушаю…', thinking: 'Думаю…', speaking: 'Отвечаю…', error: 'Ошибка' },
    handsFree: 'Без рук',
    hint: {
      'push-to-talk': 'Удерживайте кнопку (или пробел), пока говорите. Esc останавливает.',
      'hands-free': 'Нажмите один раз и говорите; я отвечу, когда вы замолчите. Esc останавливает.',
    },
    you: 'Вы: ',
    reconnecting: 'Связь потеряна, переподключаюсь…',
    notHeard: 'Извините, я не расслышал.',
    expired: 'Разговор истёк. Нажмите кнопку, чтобы начать заново.',
    reset: 'Соединение сброшено. Спросите ещё раз.',
    failed: 'Что-то пошло не так.',
    textLabel: 'Введите вопрос',
    textPlaceholder: 'Или напишите вопрос…',
    send: 'Отправить',
    errors: {
      invalid_text: 'Сначала напишите вопрос.',
      text_too_long: 'Вопрос слишком длинный: сократите его, пожалуйста.',
      rate_limited: 'Слишком много вопросов подряд: подождите немного.',
      busy: 'Помощник занят: попробуйте через несколько секунд.',
      voice_concurrency_limit: 'Помощник занят: попробуйте через минуту.',
    },
  }),
});

/** A BCP 47 tag worth sending to the server ("ru", "en-US"), or null. */
export function languageTag(value) {
  const tag = typeof value === 'string' ? value.trim() : '';
  return LANGUAGE_TAG.test(tag) ? tag : null;
}

/** The language of the session: the embed's data-language, else the page's lang, else null (server default). */
export function sessionLanguage(option, pageLang) {
  return languageTag(option) || languageTag(pageLang);
}

/** The UI language ('en' or 'ru') for a session language; anything the widget cannot speak is English. */
export function uiLanguage(language) {
  const primary = (languageTag(language) || '').split('-')[0].toLowerCase();
  return Object.hasOwn(STRINGS, primary) ? primary : 'en';
}

/** The strings for a session language. */
export function stringsFor(language) {
  return STRINGS[uiLanguage(language)];
}
