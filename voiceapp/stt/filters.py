"""Drop what Whisper invents on silence or noise ("Thanks for watching!", loops, lone punctuation)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence

# Phrases from subtitle training data that Whisper emits on silence; never a visitor's question.
PHANTOM_PHRASES = (
    "thanks for watching",
    "thank you for watching",
    "thanks for listening",
    "please subscribe",
    "like and subscribe",
    "subscribe to my channel",
    "subtitles by",
    "amara.org",
    "transcribed by",
    "translated by",
    "blank_audio",
    "see you in the next video",
    "i hope you enjoyed",
    "don't forget to subscribe",
    "продолжение следует",
    "субтитры",  # "Субтитры сделал DimaTorzok", "Субтитры создавал ...", "Субтитры подготовлены ..."
    "редактор субтитров",
    "dimatorzok",
    "спасибо за просмотр",
    "подписывайтесь на канал",
    "ставьте лайк",
)
# Real replies sometimes, phantoms on silence often: dropped only when the model doubts speech.
WEAK_PHRASES = {
    *("you", "thank you", "thanks", "bye", "bye bye", "okay", "so", "oh", "uh", "um", "hmm", "the end"),
    *("see you next time", "спасибо", "спасибо за внимание", "до новых встреч", "пока", "ага", "угу", "конец"),
}

NO_SPEECH_MAX = 0.6
LOGPROB_MIN = -1.0
COMPRESSION_MAX = 2.4
WEAK_NO_SPEECH_MAX = 0.2
WEAK_LOGPROB_MIN = -0.6
_BRACKETED = re.compile(r"^[\[\(\*♪♫#].*[\]\)\*♪♫#]$")


def _words(text: str) -> list[str]:
    """Lower-case words of `text`, punctuation dropped."""
    return re.findall(r"[\w']+", text.lower())


def is_phantom_text(text: str) -> bool:
    """Text that is a known phantom, a sound tag like "[Music]", or has no word at all."""
    stripped = text.strip()
    if not _words(stripped):
        return True
    if _BRACKETED.match(stripped):
        return True
    lowered = stripped.lower()
    return any(phrase in lowered for phrase in PHANTOM_PHRASES)


MAX_GRAM = 12


def _min_repeats(size: int) -> int:
    """Back-to-back copies that make a loop: "no no no" is speech, a 3x repeated clause is not."""
    return 4 if size <= 2 else 3


def word_key(word: str) -> str:
    """A word compared without case or trailing punctuation."""
    return word.lower().strip(".,!?;:\"'")


def has_loop(text: str) -> bool:
    """True when an n-gram (1..12 words) repeats back to back enough times to be a decoding loop."""
    return collapse_loops(text) != " ".join(text.split())


def collapse_loops(text: str) -> str:
    """Keep one copy of each looping n-gram ("go on, go on, go on, go on" -> "go on,")."""
    words = text.split()
    for size in range(1, MAX_GRAM + 1):
        out: list[str] = []
        i = 0
        while i < len(words):
            gram = [word_key(w) for w in words[i : i + size]]
            repeats = 1
            while (
                len(gram) == size
                and [word_key(w) for w in words[i + repeats * size : i + (repeats + 1) * size]] == gram
            ):
                repeats += 1
            if len(gram) == size and repeats >= _min_repeats(size):
                out.extend(words[i : i + size])
                i += size * repeats
            else:
                out.append(words[i])
                i += 1
        words = out
    return " ".join(words)


def keep_segment(segment) -> bool:
    """Whether a Whisper segment looks like real speech."""
    text = getattr(segment, "text", "") or ""
    no_speech = float(getattr(segment, "no_speech_prob", 0.0) or 0.0)
    logprob = float(getattr(segment, "avg_logprob", 0.0) or 0.0)
    compression = float(getattr(segment, "compression_ratio", 0.0) or 0.0)
    if is_phantom_text(text):
        return False
    if no_speech > NO_SPEECH_MAX and logprob < LOGPROB_MIN:
        return False
    if compression > COMPRESSION_MAX and has_loop(text):
        return False
    weak = " ".join(_words(text)) in WEAK_PHRASES
    return not (weak and (no_speech > WEAK_NO_SPEECH_MAX or logprob < WEAK_LOGPROB_MIN))


def keep_segments(segments: Iterable) -> list:
    """The segments worth keeping, with looping text collapsed."""
    kept = []
    for segment in segments:
        if not keep_segment(segment):
            continue
        text = getattr(segment, "text", "")
        if has_loop(text):
            segment = with_text(segment, collapse_loops(text))
        kept.append(segment)
    return kept


def with_text(segment, text: str):
    """A copy of a segment (dataclass or namedtuple) with other text."""
    if dataclasses.is_dataclass(segment) and not isinstance(segment, type):
        return dataclasses.replace(segment, text=text)
    if hasattr(segment, "_replace"):
        return segment._replace(text=text)
    return segment


def clean_text(text: str, no_speech_prob: float = 0.0) -> str:
    """Engine-independent filter for plain text results (Vosk, openai-whisper)."""
    if is_phantom_text(text):
        return ""
    if no_speech_prob > NO_SPEECH_MAX:
        return ""
    return collapse_loops(text.strip()) if has_loop(text) else text.strip()


def drop_phantoms(texts: Sequence[str]) -> list[str]:
    """Convenience for lists of partial texts."""
    return [t for t in (clean_text(x) for x in texts) if t]
