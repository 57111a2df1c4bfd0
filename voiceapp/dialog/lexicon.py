"""Whether a word is a real word of its language, from word lists shipped in installed packages (no download).

English: pyspellchecker's frequency list (about 160,000 words). Russian: pymorphy3's OpenCorpora dictionary,
which also gives a word's lexeme ("смеси" is a form of "смесь"). The spelling corrector asks these before it
rewrites a word: "write" is a word, not a typo of the knowledge base's "white".
"""

from __future__ import annotations

import functools
import re
import threading

_CYRILLIC = re.compile(r"[а-яё]")
_lock = threading.Lock()


@functools.cache
def _english() -> frozenset[str]:
    from spellchecker import SpellChecker

    with _lock:
        return frozenset(SpellChecker(language="en", distance=1).word_frequency.dictionary)


@functools.cache
def _morph():
    import pymorphy3

    with _lock:
        return pymorphy3.MorphAnalyzer()


def is_word(word: str) -> bool:
    """Whether the lowercase `word` is a dictionary word of its language (Russian for Cyrillic, else English)."""
    if _CYRILLIC.search(word):
        return bool(_morph().word_is_known(word))
    return word in _english()


@functools.lru_cache(maxsize=8192)
def lemmas(word: str) -> tuple[str, ...]:
    """The dictionary forms a Russian word may be a form of ("смеси" -> "смесь"); () for other words."""
    if not _CYRILLIC.search(word):
        return ()
    return tuple(dict.fromkeys(parse.normal_form for parse in _morph().parse(word)))


def warm() -> None:
    """Load both word lists (about 0.2 s), so the first question with an unknown word is not the slow one."""
    is_word("warm")
    is_word("тепло")
