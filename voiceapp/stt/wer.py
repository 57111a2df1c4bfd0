"""Word error rate with the normalisation spoken-answer tests need."""

from __future__ import annotations

import re

from voiceapp.dialog import numbers_ru

_CYRILLIC = re.compile(r"[а-яё]")

# Whisper writes contractions the speaker did not say (or the reverse); score them the same.
_CONTRACTIONS = {
    "what's": "what is",
    "where's": "where is",
    "when's": "when is",
    "who's": "who is",
    "how's": "how is",
    "it's": "it is",
    "that's": "that is",
    "there's": "there is",
    "here's": "here is",
    "let's": "let us",
    "i'm": "i am",
    "you're": "you are",
    "we're": "we are",
    "they're": "they are",
    "i've": "i have",
    "you've": "you have",
    "we've": "we have",
    "i'll": "i will",
    "you'll": "you will",
    "we'll": "we will",
    "i'd": "i would",
    "don't": "do not",
    "doesn't": "does not",
    "didn't": "did not",
    "can't": "cannot",
    "won't": "will not",
    "isn't": "is not",
    "aren't": "are not",
    "wasn't": "was not",
}


_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(value: int) -> str:
    """0..999999 in words ("42" -> "forty two"); Whisper writes digits where speakers say words."""
    if value < 20:
        return _ONES[value]
    if value < 100:
        tens, ones = divmod(value, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if value < 1000:
        hundreds, rest = divmod(value, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {number_words(rest)}" if rest else "")
    thousands, rest = divmod(value, 1000)
    return f"{number_words(thousands)} thousand" + (f" {number_words(rest)}" if rest else "")


def normalize(text: str) -> list[str]:
    """Lower-case words with punctuation dropped, contractions expanded, digits as words of the text's language."""
    text = text.lower().replace("\u2019", "'")
    # Digits in a Russian sentence are read in Russian ("6 человек" is "шесть человек", not "six").
    spell = _russian_words if _CYRILLIC.search(text) else number_words
    text = re.sub(r"[^\w\s']", " ", text.replace("ё", "е"))  # Russian writes ё as е more often than not
    words: list[str] = []
    for word in text.split():
        word = word.strip("'")
        if word.isdigit() and len(word) <= 6:
            words.extend(spell(int(word)).split())
        elif word:
            words.extend(_CONTRACTIONS.get(word, word).split())
    return words


def _russian_words(value: int) -> str:
    """A number in nominative Russian words, ё written as е like the rest of the normalised text."""
    return numbers_ru.number_words(value).replace("ё", "е")


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference word count) after normalisation."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, 1):
        current = [i] + [0] * len(hyp)
        for j, hyp_word in enumerate(hyp, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word))
        previous = current
    return previous[-1], len(ref)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of `hypothesis` against `reference` (0.0 is exact)."""
    errors, total = word_errors(reference, hypothesis)
    if total == 0:
        return 0.0 if errors == 0 else 1.0
    return errors / total
