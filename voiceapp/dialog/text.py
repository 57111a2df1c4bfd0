"""Tokens for retrieval and sentences for speech, shared by knowledge and answer."""

from __future__ import annotations

import re
import threading

import Stemmer

_WORD = re.compile(r"\w+", re.UNICODE)
_COMPOUND = re.compile(r"\b[^\W\d_]+(?:-[^\W\d_]+)+\b")
_CYRILLIC = re.compile(r"[а-яё]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-ZА-ЯЁ0-9])")

STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "from",
        "with",
        "about",
        "as",
        "into",
        "over",
        "than",
        "then",
        "so",
        "too",
        "very",
        "i",
        "me",
        "my",
        "mine",
        "we",
        "us",
        "our",
        "ours",
        "you",
        "your",
        "yours",
        "he",
        "him",
        "his",
        "she",
        "her",
        "it",
        "its",
        "they",
        "them",
        "their",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "do",
        "does",
        "did",
        "done",
        "doing",
        "have",
        "has",
        "had",
        "having",
        "can",
        "could",
        "will",
        "would",
        "shall",
        "should",
        "may",
        "might",
        "must",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "any",
        "some",
        "all",
        "each",
        "every",
        "no",
        "not",
        "please",
        "tell",
        "say",
        "let",
        "know",
        "want",
        "like",
        "need",
        "get",
        "got",
        "just",
        "also",
        "ok",
        "okay",
        "well",
        "hey",
        "much",
        "many",
        "hi",
        "hello",
        "hey",
        "thanks",
        "thank",
        "sorry",
        "excuse",
        "s",
        "t",
        "d",
        "m",
        "ll",
        "re",
        "ve",
        "don",
        "doesn",
        "didn",
        "isn",
        "aren",
        "wasn",
        "weren",
        "won",
        "wouldn",
        "couldn",
        "shouldn",
        "cannot",
        "hasn",
        "haven",
        "и",
        "в",
        "во",
        "не",
        "что",
        "он",
        "на",
        "я",
        "с",
        "со",
        "как",
        "а",
        "то",
        "все",
        "она",
        "так",
        "его",
        "но",
        "да",
        "ты",
        "к",
        "у",
        "же",
        "вы",
        "за",
        "бы",
        "по",
        "только",
        "ее",
        "мне",
        "было",
        "вот",
        "от",
        "меня",
        "еще",
        "нет",
        "о",
        "из",
        "ему",
        "теперь",
        "когда",
        "даже",
        "ну",
        "ли",
        "если",
        "уже",
        "или",
        "ни",
        "быть",
        "был",
        "него",
        "до",
        "вас",
        "нибудь",
        "опять",
        "уж",
        "вам",
        "ведь",
        "там",
        "потом",
        "себя",
        "ничего",
        "ей",
        "может",
        "они",
        "тут",
        "где",
        "есть",
        "надо",
        "ней",
        "для",
        "мы",
        "тебя",
        "их",
        "чем",
        "была",
        "сам",
        "чтоб",
        "без",
        "будто",
        "чего",
        "раз",
        "тоже",
        "себе",
        "под",
        "будет",
        "ж",
        "тогда",
        "кто",
        "этот",
        "того",
        "потому",
        "этого",
        "какой",
        "совсем",
        "ним",
        "здесь",
        "этом",
        "один",
        "почти",
        "мой",
        "тем",
        "чтобы",
        "нее",
        "сейчас",
        "были",
        "куда",
        "зачем",
        "всех",
        "никогда",
        "можно",
        "при",
        "наконец",
        "два",
        "об",
        "другой",
        "хоть",
        "после",
        "над",
        "больше",
        "тот",
        "через",
        "эти",
        "нас",
        "про",
        "всего",
        "них",
        "какая",
        "много",
        "разве",
        "три",
        "эту",
        "моя",
        "впрочем",
        "хорошо",
        "свою",
        "этой",
        "перед",
        "иногда",
        "лучше",
        "чуть",
        "том",
        "нельзя",
        "такой",
        "им",
        "более",
        "всегда",
        "конечно",
        "всю",
        "между",
        "сколько",
    ]
)

# A question word says what kind of passage answers it; these soft terms rank, they never count as matched.
EXPANSIONS = {
    "where": ("address", "location"),
    "when": ("open", "hours"),
    "much": ("cost", "price"),
    "где": ("адрес",),
    "когда": ("открыты", "часы"),
    "сколько": ("стоит", "цена"),
}

# Words that answer for each other: "when do you close?" is answered by a line with "open".
SYNONYMS: tuple[frozenset[str], ...] = ()

_local = threading.local()


def _stemmer(language: str) -> Stemmer.Stemmer:
    # Stemmer objects are not thread-safe: one per thread and language.
    cache = getattr(_local, "stemmers", None)
    if cache is None:
        cache = _local.stemmers = {}
    if language not in cache:
        cache[language] = Stemmer.Stemmer(language)
    return cache[language]


def stem(word: str) -> str:
    """The Snowball stem of a lowercase word (Russian for Cyrillic, else English)."""
    return _stemmer("russian" if _CYRILLIC.search(word) else "english").stemWord(word)


def words(text: str) -> list[str]:
    """Lowercase words of `text` (letters and digits); 'wi-fi' also gives 'wifi'."""
    # Contractions split at the apostrophe ("what's" -> what, s); the stubs are stopwords.
    text = text.lower().replace("’", "'").replace("'", " ")
    found = _WORD.findall(text)
    found.extend(match.replace("-", "") for match in _COMPOUND.findall(text))
    return found


def tokenize(text: str) -> list[str]:
    """Stemmed content words, stopwords removed: what BM25 indexes and matches."""
    return [stem(word) for word in words(text) if word not in STOPWORDS and word != "_"]


# Words that carry little of a question's topic ("are dogs *allowed*?"): they count for less.
GENERIC = frozenset(
    tokenize(
        "allowed have offer sell serve accept available possible get buy order number thing option kind type "
        "place use work go come make take find give time long way bring"
    )
)


def expansion_tokens(text: str) -> list[str]:
    """Soft query terms implied by question words ('where' -> address, location)."""
    out: list[str] = []
    for word in words(text):
        out.extend(stem(term) for term in EXPANSIONS.get(word, ()))
    return out


def sentences(text: str) -> list[str]:
    """Sentences of a passage: lines (list items) split again at sentence ends."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line:
            out.extend(part.strip() for part in _SENTENCE_END.split(line) if part.strip())
    return out


def language_of(text: str) -> str:
    """'ru' when the text is mostly Cyrillic, else 'en' (picks the language of canned replies)."""
    letters = [c for c in text.lower() if c.isalpha()]
    cyrillic = sum(1 for c in letters if _CYRILLIC.match(c))
    return "ru" if letters and cyrillic * 2 >= len(letters) else "en"


def for_speech(text: str, limit: int = 300) -> str:
    """One line a TTS voice reads well: no markup, collapsed spaces, at most `limit` chars."""
    text = re.sub(r"https?://\S+", "", text)
    text = re.sub(r"[*_`#>|]+", " ", text)
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
    if end > limit // 2:
        return cut[: end + 1]
    return cut[: cut.rfind(" ")].rstrip(",;:") + "..."


def _synonym_groups() -> tuple[frozenset[str], ...]:
    groups = (
        "open close hours",
        "cost price",
        "address location",
        "deliver delivery",
        "phone call",
        "email e-mail",
        # The same pairs in Russian: "закрываетесь" is answered by "открываемся и закрываемся" or "работаем".
        "открываетесь открыты закрываетесь закрыта работаете часы",
    )
    return tuple(frozenset(stem(w) for w in words(group)) for group in groups)


def related(token: str) -> frozenset[str]:
    """The token and the stems that answer for it (its synonym group)."""
    global SYNONYMS
    if not SYNONYMS:
        SYNONYMS = _synonym_groups()
    for group in SYNONYMS:
        if token in group:
            return group
    return frozenset((token,))
