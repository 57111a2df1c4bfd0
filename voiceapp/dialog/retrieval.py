"""Hybrid retrieval: BM25 and word coverage beside dense e5 similarity, and the answer-or-refuse decision."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from voiceapp.dialog import background
from voiceapp.dialog.context import WHEN_WORDS
from voiceapp.dialog.knowledge import ProjectIndex, rank
from voiceapp.dialog.text import GENERIC, related, stem, tokenize

GENERIC_WEIGHT = 0.15
# e5 cosines are compressed (0.75-0.91 here), so a passage's similarity is read relative to the question's
# similarities with every passage of the project: (cos - mean) / max(std, STD_FLOOR).
STD_FLOOR = 0.015
# Word matching's own bar (the BM25-only path's MIN_COVERAGE): its pick is one more vote for a passage.
LEXICAL_COVERAGE = 0.55
# Some passages are near every short question (hubs: "Free Wi-Fi ... printed on your receipt" draws "what is
# your address?" and "do you sell phones?"). A passage's similarity to questions that name nothing measures that
# pull; HUB_WEIGHT of it is taken off each cosine (cross-domain similarity local scaling with a neutral prior).
NEUTRAL_QUESTIONS = ("What is it?", "Tell me about it.", "Что это?", "Расскажите.")
HUB_WEIGHT = 0.5
# A passage sharing only day/time words with a question that names something the knowledge base never does
# answers only when the question is this much nearer it than any background line: "What's the latest I can come
# in on a Sunday?" is about the Sunday hours (0.068; the tuning rows' answers 0.064-0.076), "Do you rent bikes on
# Sunday?" is not (0.054; the tuning rows' refusals 0.024-0.039); below it the unnamed word is the topic.
WHEN_ONLY_MARGIN = 0.06


@dataclass(frozen=True)
class Params:
    """How the best passage is picked and when to refuse, calibrated by `python -m bench.dialog_eval --calibrate`
    on the evaluation set's tuning half only (tests/data/dialog_eval/README.md).

    The pick: the highest z + coverage_weight * coverage + title_weight * title hits + lexical_weight when word
    matching picks the same passage. The decision: a logistic model over (cosine, z, gap to the runner-up's pick
    score, coverage, word matching agrees, z below the densest passage's, cosine above the nearest background
    line, z once the shared words are taken out of the question); answer when its logit is >= 0.
    """

    coverage_weight: float = 2.0
    title_weight: float = 0.25
    lexical_weight: float = 1.0
    weights: tuple[float, ...] = (12.5159, 0.354, 0.2106, 0.9797, 0.5027, -0.5388, 11.0729, 0.2242)
    bias: float = -11.8927


CALIBRATED = Params()


@dataclass(frozen=True)
class Candidate:
    """One passage's signals for one question."""

    index: int
    dense: float  # cosine similarity
    z: float  # cosine relative to the question's similarities with every passage
    coverage: float  # IDF-weighted share of the question's words the passage contains
    bm25: float
    hits: int  # question words in the passage's own heading
    lexical: bool = False  # word matching alone (coverage >= LEXICAL_COVERAGE, best of those) picks it too
    when_only: bool = False  # shares only day/time words with a question about something the KB never names
    background: float = 0.0  # cosine less the question's best cosine with a background line (background.py)
    residual_z: float = 0.0  # z of the question without the words it shares with the passage (residual_z)

    def pick_score(self, params: Params = CALIBRATED) -> float:
        """What ranks the candidates of one question."""
        return (
            self.z
            + params.coverage_weight * self.coverage
            + params.title_weight * self.hits
            + params.lexical_weight * self.lexical
        )


@dataclass(frozen=True)
class Choice:
    """The picked candidate, its gap to the runner-up, and the decision's logit (>= 0: answer)."""

    candidate: Candidate
    gap: float
    logit: float

    @property
    def confidence(self) -> float:
        """0..1, 0.5 at the refusal boundary."""
        return 1.0 / (1.0 + math.exp(-self.logit))


def features(candidate: Candidate, gap: float, top_z: float) -> tuple[float, ...]:
    """What the decision model reads: cosine, z, gap to the runner-up, coverage, word matching agrees, and how
    far the pick's z is below the densest passage's (words and meaning disagree: "sell cars" vs "car park"), how
    much nearer the passage is than the background, and its z without the shared words."""
    return (
        candidate.dense,
        candidate.z,
        gap,
        candidate.coverage,
        float(candidate.lexical),
        candidate.z - top_z,
        candidate.background,
        candidate.residual_z,
    )


def coverage(
    query: list[str], tokens: set[str], idf: dict[str, float], generic_weight: float = GENERIC_WEIGHT
) -> float:
    """IDF-weighted share of the question's words that the passage contains (GENERIC words count for less)."""
    if not query:
        return 0.0
    # A word the knowledge base never uses ("pizza") is the strongest sign of an out-of-scope question.
    unknown = max(idf.values(), default=1.0)

    def weight(token: str) -> float:
        return idf.get(token, unknown) * (generic_weight if token in GENERIC else 1.0)

    total = sum(weight(token) for token in query)
    found = sum(weight(token) for token in query if related(token) & tokens)
    return found / total if total else 0.0


def title_hits(index: ProjectIndex, i: int, terms: list[str]) -> int:
    """How many question terms passage i's own (last) heading contains."""
    title = set(tokenize(index.passages[i].section.rsplit(" > ", 1)[-1]))
    return sum(1 for term in set(terms) if term in title)


def hub_of(index: ProjectIndex, neutral: list[np.ndarray]) -> np.ndarray:
    """Per passage, how much more than the average passage it resembles questions that name nothing."""
    pull = np.mean([raw_dense_scores(index, vector.astype(np.float32)) for vector in neutral], axis=0)
    return (pull - pull.mean()).astype(np.float32)


def dense_scores(index: ProjectIndex, qvec: np.ndarray) -> np.ndarray:
    """Per passage, the higher cosine of the whole passage and of its best sentence, less its hub pull."""
    return _less_hub(index, raw_dense_scores(index, qvec))


def _less_hub(index: ProjectIndex, raw: np.ndarray) -> np.ndarray:
    """Raw passage cosines less each passage's hub pull (unchanged until the index has its hub)."""
    return raw if index.hub is None else raw - HUB_WEIGHT * index.hub


def raw_dense_scores(index: ProjectIndex, qvec: np.ndarray) -> np.ndarray:
    """Per passage, the higher cosine of the whole passage and of its best sentence."""
    assert index.vectors is not None
    sims = index.vectors @ qvec
    if index.sentence_vectors is not None and index.sentence_owner is not None and len(index.sentence_vectors):
        # Sentences are stored passage by passage: the max of each passage's run of rows.
        best = np.full(len(sims), -1.0, dtype=np.float32)
        np.maximum.at(best, index.sentence_owner, index.sentence_vectors @ qvec)
        sims = np.maximum(sims, best)
    return sims


@dataclass(frozen=True)
class Meaning:
    """What the question's vector is compared with beyond the passages: the background lines' vectors, the
    question's words (stopwords out) and the vectors of those the knowledge base knows."""

    background: np.ndarray | None = None
    said: tuple[str, ...] = ()
    word_vectors: Mapping[str, np.ndarray] | None = None


def _z(sims: np.ndarray) -> np.ndarray:
    return (sims - float(sims.mean())) / max(float(sims.std()), STD_FLOOR)


def residual_z(
    index: ProjectIndex, qvec: np.ndarray, i: int, meaning: Meaning, z: np.ndarray, memo: dict | None = None
) -> float:
    """Passage i's z for the question with the words it shares with the passage projected out of its vector, when
    the question also names something the knowledge base never does: "Do you sell coffee machines?" less
    "coffee" is far from the coffee beans; "Сколько стоит бутерброд?" less "стоит" is still near the food."""
    vectors = meaning.word_vectors or {}
    tokens = index.token_set(i)
    shared = [w for w in dict.fromkeys(meaning.said) if related(stem(w)) & tokens and w in vectors]
    unknown = any(stem(w) not in index.idf and stem(w) not in GENERIC for w in meaning.said)
    if not shared or not unknown:
        return float(z[i])
    memo = {} if memo is None else memo  # one question's candidates share few word sets: score each set once
    if tuple(shared) not in memo:
        rest = qvec.astype(np.float32).copy()
        for word in shared:
            rest -= float(rest @ vectors[word]) * vectors[word]
        norm = float(np.linalg.norm(rest))
        memo[tuple(shared)] = None if norm < 1e-6 else _z(dense_scores(index, rest / norm))
    scores = memo[tuple(shared)]
    return float(z[i]) if scores is None else float(scores[i])


def candidates(
    index: ProjectIndex, query: list[str], soft: list[str], qvec: np.ndarray, k: int = 10, meaning: Meaning = Meaning()
) -> list[Candidate]:
    """The union of the BM25 and the dense top k, each with every signal, best hybrid score first."""
    if index.vectors is None or not len(index.passages):
        return []
    qvec = qvec.astype(np.float32)
    raw = raw_dense_scores(index, qvec)
    sims = _less_hub(index, raw)  # dense_scores, with the raw cosines kept for the background margin
    z = _z(sims)
    above = background.margin(raw, qvec, meaning.background)
    memo: dict = {}
    bm25 = dict(rank(index, query + soft, k))
    dense_top = [int(i) for i in np.argsort(-sims)[:k]]
    scored_query = query or soft
    out = []
    for i in dict.fromkeys(dense_top + list(bm25)):
        out.append(
            Candidate(
                index=i,
                dense=float(sims[i]),
                z=float(z[i]),
                # Every word counts here: "sell" is what sets "do you sell cars?" apart from the car park.
                coverage=coverage(scored_query, index.token_set(i), index.idf, generic_weight=1.0),
                bm25=bm25.get(i, 0.0),
                hits=title_hits(index, i, query + soft),
                when_only=when_only(query, index.token_set(i), index.idf),
                background=float(above[i]),
                residual_z=residual_z(index, qvec, i, meaning, z, memo),
            )
        )
    return _mark_lexical(out)


def _mark_lexical(found: list[Candidate]) -> list[Candidate]:
    """Flag the passage word matching alone would answer from (most coverage, then heading hits, then BM25)."""
    covered = [c for c in found if c.coverage >= LEXICAL_COVERAGE]
    if not covered:
        return found
    top = max(covered, key=lambda c: (c.coverage, c.hits, c.bm25))
    return [dataclasses.replace(c, lexical=True) if c is top else c for c in found]


def pick(found: list[Candidate], params: Params = CALIBRATED) -> Choice | None:
    """The best-ranked candidate with its decision logit (None when there is no candidate)."""
    if not found:
        return None
    ranked = sorted(found, key=lambda c: (-c.pick_score(params), -c.hits, -c.bm25))
    best = ranked[0]
    gap = best.pick_score(params) - ranked[1].pick_score(params) if len(ranked) > 1 else 0.0
    top_z = max(c.z for c in found)
    logit = params.bias + sum(w * f for w, f in zip(params.weights, features(best, gap, top_z), strict=True))
    return Choice(best, gap, logit)


def choose(found: list[Candidate], params: Params = CALIBRATED) -> Choice | None:
    """The pick when the decision says answer, else None (refuse)."""
    choice = pick(found, params)
    if choice is None or choice.logit < 0 or about_something_else(choice.candidate):
        return None
    return choice


def about_something_else(candidate: Candidate) -> bool:
    """Whether a passage that shares only day/time words answers a question about something else: "Do you sell
    pizza on Saturday?" is about pizza (the Saturday hours would answer a question not asked), unless the question
    is clearly nearer the passage than any other business (WHEN_ONLY_MARGIN: "how early ... on a Monday?")."""
    return candidate.when_only and candidate.background < WHEN_ONLY_MARGIN


def when_only(query: list[str], tokens: set[str], idf: dict[str, float]) -> bool:
    """Whether a passage shares only day/time words with `query` while the query names a thing the knowledge
    base never mentions (a non-generic word absent from every passage)."""
    shared = {token for token in query if related(token) & tokens}
    unnamed = any(token not in idf and token not in GENERIC for token in query)
    return bool(shared) and shared <= WHEN_WORDS and unnamed
