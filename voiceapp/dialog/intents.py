"""Rule-based intents with a confidence: what the visitor wants besides a knowledge question."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

QUESTION = "question"

# (intent, pattern). A pattern matches a phrase; how much of the utterance it covers sets the confidence.
_RULES: tuple[tuple[str, str], ...] = (
    ("greeting", r"\b(hello|hi|hey|hiya|good (morning|afternoon|evening)|greetings)\b"),
    ("goodbye", r"\b(bye|goodbye|good bye|see you|that'?s all|farewell)\b"),
    ("thanks", r"\b(thanks|thank you|cheers)\b"),
    ("help", r"\b(help|what can you do|how does this work|what can i ask)\b"),
    ("repeat", r"\b(repeat( that| it)?|say (that|it) again|pardon|come again|what did you say)\b"),
    ("stop", r"\b(stop|cancel|never ?mind|be quiet|shut up|enough)\b"),
    (
        "human",
        r"\b((talk|speak|chat) (to|with) (a |an |the )?(real |live )?"
        r"(human|person|someone|agent|operator|manager|staff)"
        r"|(real|live) (person|human|agent)|human agent|operator)\b",
    ),
    (
        "navigate",
        r"\b(open|go to|show( me)?|take me to|navigate to|bring up)\s+(the\s+)?"
        r"(?P<target>[\w -]{2,40}?)\s+(page|section|tab)\b",
    ),
    # Russian phrasing (the seed's visitors speak Russian first).
    (
        "greeting",
        r"\b(привет(ствую)?|здравствуй(те)?|добрый (день|вечер)|доброе утро|доброй ночи|хай|салют|алло)\b",
    ),
    ("goodbye", r"\b(пока|до свидания|всего (доброго|хорошего)|до встречи|прощай(те)?|это вс[её]|до скорого)\b"),
    ("thanks", r"\b(спасибо( большое| огромное)?|благодарю|благодарствую|спс)\b"),
    (
        "help",
        r"\b(помощь|помоги(те)?|что (ты|вы) умеешь|что (ты|вы) умеете|что (у вас )?можно спросить"
        r"|как (это|ты|вы) работает|как (ты|вы) работаешь|что ты можешь|что вы можете)\b",
    ),
    (
        "repeat",
        r"\b(повтори(те)?( пожалуйста)?|ещ[её] раз|скажи(те)? ещ[её] раз|что (ты|вы) сказал(и|а)?"
        r"|не расслышал(а|и)?|не понял(а)?)\b",
    ),
    ("stop", r"\b(стоп|хватит|отмена|отмени(те)?|замолчи(те)?|остановись|остановитесь|перестань(те)?|не надо)\b"),
    (
        "human",
        r"\b(оператор(а|ом|у)?|живо(й|го|му) человек(а|ом|у)?|менеджер(а|ом|у)?|консультант(а|ом|у)?"
        r"|(позов(и|ите)|соедини(те)?|переключи(те)?)( меня)? (с|на)? ?(человек(а|ом)?|сотрудник(а|ом)?)"
        r"|поговорить с (человеком|сотрудником))\b",
    ),
    (
        "navigate",
        r"\b(открой(те)?|покажи(те)?|перейди(те)?( на| в)?|перейти( на| в)?|отвед(и|ите) на)\s+"
        r"(страниц[уа]|раздел|вкладку)\s+(?P<target>[\w -]{2,40}?)$",
    ),
)
_FILLER = re.compile(
    r"\b(please|ok(ay)?|so|well|um+|uh+|oh|just|now|can you|could you|would you|can i|could i|may i|let me"
    r"|i want to|i'd like to|i would like to|i need to"
    r"|пожалуйста|ну|а|так|ладно|окей|хорошо|можно|мне|меня|нас|хочу|хотел(а)? бы|давай(те)?|скажи(те)?|вот"
    r"|эм+|э+|ой|слушай(те)?|уже|тогда|же)\b"
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
