"""Recogniser-like typos ("expresso", "adress", "суботу") corrected to the knowledge base's own words; a real
word of the language ("write", "late") is never rewritten into another one."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from voiceapp.dialog import lexicon
from voiceapp.dialog.text import STOPWORDS, stem, words

# Short words are too often other real words one letter away ("cars" / "cards", "boat" / "boot"): leave them.
MIN_LENGTH = 5
# Two edits only for long words, where a second real word that close is rare.
TWO_EDITS_FROM = 8
# Longer "words" are not typos of a word (and their deletion neighbourhood grows with the square of the length).
MAX_LENGTH = 16
# Russian unstressed vowels sound alike ("тилифон", "малаком", "закрываитесь"): letters of one group stand for
# each other, up to VOWEL_SWAPS of them in a word.
_RU_VOWELS = {"а": "о", "о": "а", "е": "ия", "и": "е", "я": "е"}
VOWEL_SWAPS = 2


def _deletes(word: str, depth: int) -> set[str]:
    """Every string made by deleting up to `depth` letters of `word` (the SymSpell neighbourhood)."""
    out, frontier = {word}, {word}
    for _ in range(depth):
        frontier = {w[:i] + w[i + 1 :] for w in frontier for i in range(len(w))}
        out |= frontier
    return out


def distance(a: str, b: str) -> int:
    """Edit distance with adjacent transpositions (optimal string alignment)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[-1]


@dataclass
class Speller:
    """The knowledge base's words, indexed by their deletion neighbourhoods for fast near-match lookup."""

    counts: dict[str, int]
    stems: frozenset[str]
    _by_delete: dict[str, set[str]] = field(default_factory=dict)
    _by_lemma: dict[str, str] | None = None

    @classmethod
    def of(cls, texts: Iterable[str]) -> Speller:
        """A speller over the words of `texts` (passages and their headings)."""
        counts: dict[str, int] = {}
        for text in texts:
            for word in words(text):
                if word.isalpha():
                    counts[word] = counts.get(word, 0) + 1
        speller = cls(counts, frozenset(stem(word) for word in counts))
        for word in counts:
            if MIN_LENGTH - 1 <= len(word) <= MAX_LENGTH + 2:
                # One deletion per knowledge-base word (a 10,000-word base: about 100,000 keys); a long question
                # word's two deletions against these still find most two-edit typos.
                for key in _deletes(word, 1):
                    speller._by_delete.setdefault(key, set()).add(word)
        return speller

    def known(self, word: str) -> bool:
        """A word retrieval can already match: a stopword, not a word, or (by stem) in the knowledge base."""
        return word in STOPWORDS or not word.isalpha() or word in self.counts or stem(word) in self.stems

    def correct(self, word: str) -> str | None:
        """The knowledge base's word `word` is a typo of, or None (known, too short, no single closest word)."""
        if not MIN_LENGTH <= len(word) <= MAX_LENGTH or self.known(word):
            return None
        if lexicon.is_word(word):
            # A real word is what the visitor said ("write" is not "white"); only its own lexeme may replace it.
            return self.same_lexeme(word)
        limit = 2 if len(word) >= TWO_EDITS_FROM else 1
        near = {w for key in _deletes(word, limit) for w in self._by_delete.get(key, ())}
        scored = sorted((distance(word, w), -self.counts[w], w) for w in near)
        scored = [item for item in scored if item[0] <= limit]
        if not scored:
            return self._respelled(word)
        best = scored[0]
        # Two different words equally close ("adress": "address"? "dress"?) are a guess: leave the word alone.
        rivals = [w for d, _, w in scored[1:] if d == best[0] and stem(w) != stem(best[2])]
        return None if rivals else best[2]

    def _respelled(self, word: str) -> str | None:
        """For a Russian non-word, the knowledge base's form of the one dictionary word its unstressed vowels spell
        ("тилифон" -> "телефон"), or None (none, two different words equally near, or one the base never uses)."""
        found = vowel_respellings(word)
        if len(found) != 1:
            return None
        return found[0] if stem(found[0]) in self.stems else self.same_lexeme(found[0])

    def same_lexeme(self, word: str) -> str | None:
        """The knowledge base's form of the same dictionary word ("смеси" -> "смесь"), or None."""
        if self._by_lemma is None:
            by_lemma: dict[str, str] = {}
            for known in sorted(self.counts, key=lambda w: -self.counts[w]):
                for lemma in lexicon.lemmas(known):
                    by_lemma.setdefault(lemma, known)
            self._by_lemma = by_lemma
        return next((self._by_lemma[lemma] for lemma in lexicon.lemmas(word) if lemma in self._by_lemma), None)


def vowel_respellings(word: str) -> list[str]:
    """The dictionary words that `word` becomes with the fewest (at most VOWEL_SWAPS) unstressed-vowel swaps."""
    spots = [i for i, c in enumerate(word) if c in _RU_VOWELS]
    level = {word}
    for _ in range(VOWEL_SWAPS):
        level = {w[:i] + v + w[i + 1 :] for w in level for i in spots for v in _RU_VOWELS[word[i]] if w[i] == word[i]}
        found = sorted(w for w in level if lexicon.is_word(w))
        if found:
            return found
    return []


_WORD = re.compile(r"\w+", re.UNICODE)


def normalize(speller: Speller | None, text: str) -> str:
    """`text` with each unknown word that is one (long words: two) edits from a knowledge-base word replaced."""
    if speller is None:
        return text

    def fix(match: re.Match) -> str:
        word = match.group(0)
        better = speller.correct(word.lower())
        return word if better is None else better

    return _WORD.sub(fix, text)


# US and British spellings of the same word: a visitor may use either, the knowledge base only one.
_US_UK = {
    "check": "cheque",
    "checks": "cheques",
    "color": "colour",
    "center": "centre",
    "meter": "metre",
    "meters": "metres",
    "kilometer": "kilometre",
    "kilometers": "kilometres",
    "favorite": "favourite",
    "flavor": "flavour",
    "flavors": "flavours",
    "neighborhood": "neighbourhood",
    "organization": "organisation",
    "program": "programme",
    "tire": "tyre",
    "license": "licence",
    "catalog": "catalogue",
    "jewelry": "jewellery",
    "theater": "theatre",
    "gray": "grey",
}
_VARIANTS = {**_US_UK, **{uk: us for us, uk in _US_UK.items()}}


def other_spelling(speller: Speller | None, text: str) -> str | None:
    """`text` with its words the knowledge base never uses in the other (US/UK) spelling, or None if none."""
    changed = False

    def swap(match: re.Match) -> str:
        nonlocal changed
        word = match.group(0).lower()
        if word in _VARIANTS and (speller is None or not speller.known(word)):
            changed = True
            return _VARIANTS[word]
        return match.group(0)

    swapped = _WORD.sub(swap, text)
    return swapped if changed else None
