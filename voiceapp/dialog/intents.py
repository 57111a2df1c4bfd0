"""Rule-based intents with a confidence: what the visitor wants besides a knowledge question."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

QUESTION = "question"

# (intent, pattern). A pattern matches a phrase; how much of the utterance it covers sets the confidence.
_RULES: tuple[tuple[str, str], ...] = (
    ("greeting", r"\b(hello|hi|hey|hiya|good (morning|afternoon|evening)|greetings|привет|здравствуйте|добрый день)\b"),
    ("goodbye", r"\b(bye|goodbye|good bye|see you|that'?s all|farewell|пока|до свидания)\b"),
    ("thanks", r"\b(thanks|thank you|cheers|спасибо)\b"),
    ("help", r"\b(help|what can you do|how does this work|what can i ask|помощь|что ты умеешь)\b"),
    ("repeat", r"\b(repeat( that| it)?|say (that|it) again|pardon|come again|what did you say|повтори(те)?)\b"),
    ("stop", r"\b(stop|cancel|never ?mind|be quiet|shut up|enough|стоп|хватит|отмена)\b"),
    (
        "human",
        r"\b((talk|speak|chat) (to|with) (a |an |the )?(real |live )?"
        r"(human|person|someone|agent|operator|manager|staff)"
        r"|(real|live) (person|human|agent)|human agent|operator|оператор|живой человек)\b",
    ),
    (
        "navigate",
        r"\b(open|go to|show( me)?|take me to|navigate to|bring up)\s+(the\s+)?"
        r"(?P<target>[\w -]{2,40}?)\s+(page|section|tab)\b",
    ),
)
_FILLER = re.compile(
    r"\b(please|ok(ay)?|so|well|um+|uh+|oh|just|now|can you|could you|would you|can i|could i|may i|let me"
    r"|i want to|i'd like to|i would like to|i need to)\b"
)


@dataclass(frozen=True)
class Intent:
    """An intent name, how sure we are (0..1), and what it carries (e.g. navigate's target)."""

    name: str
    confidence: float
    entities: dict = field(default_factory=dict)


def _normalize(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w' -]", " ", text.lower().replace("’", "'"))).strip()


def _leftover_words(text: str, span: tuple[int, int]) -> int:
    rest = text[: span[0]] + " " + text[span[1] :]
    return len(_FILLER.sub(" ", rest).split())


def classify(text: str) -> Intent:
    """The best intent for `text`; an utterance that is only the phrase scores highest."""
    normalized = _normalize(text)
    if not normalized:
        return Intent(QUESTION, 0.0)
    best = Intent(QUESTION, 0.5)
    for name, pattern in _RULES:
        match = re.search(pattern, normalized)
        if match is None:
            continue
        leftover = _leftover_words(normalized, match.span())
        # "Hello!" is surely a greeting; "hi, what time do you open?" is a question that starts with one.
        confidence = 0.95 if leftover == 0 else 0.8 if leftover <= 2 else 0.4
        if name == "navigate":
            confidence = max(confidence, 0.85)
        entities = {"target": match.group("target").strip()} if name == "navigate" else {}
        if confidence > best.confidence:
            best = Intent(name, confidence, entities)
    return best
