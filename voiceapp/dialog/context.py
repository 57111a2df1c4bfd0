"""Conversation context: earlier turns, and follow-ups ("and on Sunday?") rewritten as full questions."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from voiceapp.dialog.text import GENERIC, STOPWORDS, related, stem, words

_MARKER = re.compile(
    r"^\s*(and also|and what about|and how about|what about|how about|and|also|same for|what if|а если|а|и)\b[\s,]*",
    re.IGNORECASE,
)
_PRONOUNS = frozenset({"it", "that", "this", "they", "them", "those", "its", "это", "он", "она", "они"})
# Words of one kind replace each other in a follow-up ("Saturday" -> "Sunday").
_CATEGORIES: tuple[frozenset[str], ...] = (
    frozenset(
        stem(w)
        for w in [
            "monday",
            "tuesday",
            "wednesday",
            "thursday",
            "friday",
            "saturday",
            "sunday",
            "weekend",
            "weekends",
            "weekday",
            "weekdays",
            "today",
            "tomorrow",
            "tonight",
            "holiday",
            "holidays",
            "christmas",
            "morning",
            "afternoon",
            "evening",
            "понедельник",
            "вторник",
            "среду",
            "среда",
            "четверг",
            "пятницу",
            "пятница",
            "субботу",
            "суббота",
            "воскресенье",
            "выходные",
            "будни",
            "сегодня",
            "завтра",
            "праздники",
            "утром",
            "вечером",
        ]
    ),
)
# Day and time words: they say when, never what a question is about.
WHEN_WORDS = _CATEGORIES[0]
_SMALL_TALK = {"greeting", "goodbye", "thanks", "help", "repeat", "stop", "human"}


@dataclass(frozen=True)
class Exchange:
    """One earlier turn: what the visitor said, what we answered, and the intent."""

    user: str
    assistant: str
    intent: str


def _text(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("text")
    return value.strip() if isinstance(value, str) else ""


def exchanges(history: Iterable[dict], limit: int) -> list[Exchange]:
    """The last `limit` turns, oldest first, from interaction documents or chat messages."""
    out: list[Exchange] = []
    pending_user = ""
    for item in history:
        if "role" in item:  # chat-style {"role": "user"|"assistant", "content": ...}
            if item["role"] == "user":
                pending_user = _text(item.get("content"))
            elif item["role"] == "assistant":
                out.append(Exchange(pending_user, _text(item.get("content")), item.get("intent") or "question"))
                pending_user = ""
            continue
        user = _text(item.get("transcript")) or _text(item.get("text"))
        reply = _text(item.get("reply_text")) or _text(item.get("reply"))
        if user or reply:
            out.append(Exchange(user, reply, item.get("intent") or "question"))
    return out[-limit:] if limit > 0 else []


def last_reply(history: list[Exchange]) -> str:
    """The most recent thing we said (for 'repeat that'), or ''."""
    for exchange in reversed(history):
        if exchange.assistant:
            return exchange.assistant
    return ""


def last_question(history: list[Exchange]) -> str:
    """The visitor's most recent knowledge question, or ''."""
    for exchange in reversed(history):
        if exchange.user and exchange.intent not in _SMALL_TALK:
            return exchange.user
    return ""


def _content(text: str) -> list[str]:
    return [w for w in words(text) if w not in STOPWORDS and w not in _PRONOUNS]


def is_follow_up(text: str) -> bool:
    """'and on Sunday?', 'what about a latte?', 'how much does it cost?', 'Sunday?'."""
    if _MARKER.match(text):
        return True
    all_words = words(text)
    if len(all_words) <= 2 and all_words and all(_category(stem(w)) for w in all_words):
        return True
    return bool(set(all_words) & _PRONOUNS) and len(_content(text)) <= 2


def _category(token: str) -> frozenset[str] | None:
    return next((cat for cat in _CATEGORIES if token in cat), None)


def _replace(previous: str, drop: set[str], phrase: str) -> str:
    """`previous` with its words whose stem is in `drop` replaced (once) by `phrase`."""
    done = False

    def swap(match: re.Match) -> str:
        nonlocal done
        if stem(match.group(0).lower()) not in drop:
            return match.group(0)
        if done:
            return ""
        done = True
        return phrase

    return re.sub(r"\s{2,}", " ", re.sub(r"\w+", swap, previous)).strip()


def _slot(old_stems: list[str], new_stems: set[str]) -> set[str]:
    """The previous question's words a follow-up's words replace: the same kind (a weekday for a weekday), or
    words answering for each other ("close" for "open")."""
    drop = {s for s in old_stems for n in new_stems if _category(n) is not None and _category(s) is _category(n)}
    return drop or {s for s in old_stems for n in new_stems if s != n and s in related(n)}


def _names_a_topic(new_stems: set[str], idf: dict[str, float]) -> bool:
    """Whether a follow-up's words can replace the previous question's topic: no day or time word, and one the
    knowledge base knows ("А сколько ждать?" after the delivery price keeps the delivery: "ждать" is no topic)."""
    return all(_category(n) is None for n in new_stems) and any(n in idf for n in new_stems)


def _topic_word(old_stems: list[str], idf: dict[str, float]) -> set[str]:
    """The previous question's word a new topic replaces: its rarest topic word, never a day or time ("and when
    do you close?" after a Sunday question still asks about Sunday) and a GENERIC word only when nothing else is
    known ("what about your address?" after "what's your phone number?" swaps the phone, not the number)."""
    known = [s for s in old_stems if s in idf and _category(s) is None]
    return {max(known, key=lambda s: (s not in GENERIC, idf[s]))} if known else set()


def resolve(text: str, history: list[Exchange], idf: dict[str, float] | None = None) -> str:
    """The question `text` stands for: a follow-up becomes the previous question with the new detail."""
    previous = last_question(history)
    if not previous or not is_follow_up(text):
        return text
    new_words = _content(_MARKER.sub("", text))
    if not new_words:
        return previous
    phrase = " ".join(new_words)
    new_stems = {stem(w) for w in new_words}
    old_stems = [stem(w) for w in _content(previous)]
    drop = _slot(old_stems, new_stems)
    if not drop and _MARKER.match(text) and idf and _names_a_topic(new_stems, idf):
        drop = _topic_word(old_stems, idf)
    if drop:
        return _replace(previous, drop, phrase)
    if _MARKER.match(text):
        return f"{previous.strip().rstrip('?.! ')} {phrase}"
    # A pronoun ("how much does it cost?") stands for what the previous question was about.
    return f"{text.strip().rstrip('?.! ')} {' '.join(_content(previous))}"
