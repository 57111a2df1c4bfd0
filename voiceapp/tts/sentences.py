"""Splitting a reply into sentences, so the first one can be spoken while the rest is synthesized."""

from __future__ import annotations

import re

# Words whose trailing dot does not end a sentence (English and Russian forms the replies use).
_ABBREVIATIONS = {
    "mr",
    "mrs",
    "ms",
    "dr",
    "prof",
    "sr",
    "jr",
    "st",
    "vs",
    "etc",
    "e.g",
    "i.e",
    "approx",
    "no",
    "fig",
    "inc",
    "ltd",
    "co",
    "jan",
    "feb",
    "mar",
    "apr",
    "jun",
    "jul",
    "aug",
    "sep",
    "sept",
    "oct",
    "nov",
    "dec",
    "т.е",
    "т.д",
    "т.п",
    "и.т.д",
    "др",
    "г",
    "ул",
    "д",
    "руб",
    "см",
    "стр",
}
# A candidate break: end punctuation (and closing quotes/brackets) followed by whitespace.
_BREAK = re.compile(r"([.!?…]+[\"')\]»”]*)(\s+)")
_SOFT_BREAK = re.compile(r"(?<=[,;:—–])\s+")
# Before a word that opens a new clause: where a first sentence has no comma early enough, its first chunk may
# end there. English and Russian conjunctions and relative words that the replies use.
_CLAUSE_START = re.compile(
    r"\s+(?=(?:and|but|or|so|because|which|where|while|although|и|а|но|или|чтобы|потому|который|которая|которое"
    r"|которые|где|когда|если)\s)",
    re.IGNORECASE,
)
# A first chunk shorter than this sounds clipped: keep at least a few words together.
MIN_FIRST_CHARS = 20


def split_sentences(text: str, max_chars: int = 400, first_max_chars: int | None = None) -> list[str]:
    """Non-empty sentences of `text`, each at most `max_chars` long (longer ones cut at commas, then spaces).

    With `first_max_chars`, a longer first sentence is cut at its first clause boundary within that length, so
    the first audio is ready sooner: the voice's time grows with the text (a comma is a natural pause anyway),
    and the rest is synthesized while the head plays.
    """
    text = re.sub(r"\s+", " ", text or "").strip()
    if not text:
        return []
    out: list[str] = []
    for sentence in _sentences(text):
        out.extend(_cap(sentence, max_chars))
    if first_max_chars and len(out[0]) > first_max_chars:
        out[0:1] = _first_clause(out[0], first_max_chars)
    return out


def _first_clause(sentence: str, limit: int) -> list[str]:
    """[head, rest] cut at the first clause boundary past a few words and within `limit`, or [sentence].

    A comma, semicolon or dash is preferred, else the gap before a conjunction. The pieces keep the reply's own
    words and punctuation: captions and the browser's spoken fallback read the chunks as they are.
    """
    for pattern in (_SOFT_BREAK, _CLAUSE_START):
        cuts = [m.start() for m in pattern.finditer(sentence) if MIN_FIRST_CHARS <= m.start() <= limit]
        if cuts:
            return [sentence[: cuts[0]].strip(), sentence[cuts[0] :].strip()]
    return [sentence]


def _sentences(text: str) -> list[str]:
    """Cut after end punctuation unless it ends an abbreviation, a number or an initial."""
    pieces: list[str] = []
    start = 0
    for match in _BREAK.finditer(text):
        end = match.end(1)
        following = text[match.end() : match.end() + 1]
        if _is_break(text[start:end], following):
            pieces.append(text[start:end].strip())
            start = match.end()
    pieces.append(text[start:].strip())
    return [piece for piece in pieces if piece]


def _is_break(sentence: str, following: str) -> bool:
    """Whether the punctuation at the end of `sentence` really ends it."""
    if not sentence.endswith("."):
        return True
    words = sentence[:-1].split()
    last = words[-1].lower().lstrip("(\"'«") if words else ""
    if last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha()):
        return False
    # "the 3. item" or a lower-case continuation reads as one sentence.
    return not following or following.isupper() or following.isdigit() or not following.isalpha()


def _cap(sentence: str, max_chars: int) -> list[str]:
    """`sentence` in pieces of at most `max_chars`, preferring clause boundaries."""
    if len(sentence) <= max_chars:
        return [sentence]
    pieces: list[str] = []
    current = ""
    for part in _SOFT_BREAK.split(sentence):
        for word in part.split(" ") if len(part) > max_chars else [part]:
            candidate = f"{current} {word}".strip()
            if len(candidate) <= max_chars:
                current = candidate
                continue
            if current:
                pieces.append(current)
            current = word[:max_chars]
    if current:
        pieces.append(current)
    return pieces
