"""Hybrid retrieval: BM25 and word coverage beside dense e5 similarity, and the answer-or-refuse decision."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from voiceapp.dialog.knowledge import ProjectIndex, rank
from voiceapp.dialog.text import related, tokenize

# Words that carry little of a question's topic ("are dogs *allowed*?"): they count for less.
GENERIC = frozenset(
    tokenize(
        "allowed have offer sell serve accept available possible get buy order number thing option kind type "
        "place use work go come make take find give time long way bring"
    )
)
GENERIC_WEIGHT = 0.15
# e5 cosines are compressed (0.75-0.91 here), so a passage's similarity is read relative to the question's
# similarities with every passage of the project: (cos - mean) / max(std, STD_FLOOR).
STD_FLOOR = 0.015


@dataclass(frozen=True)
class Params:
    """Weights of the hybrid score and the refusal threshold, calibrated by `python -m bench.dialog_eval
    --calibrate` on the evaluation set's tuning half (see tests/data/dialog_eval/README.md)."""

    coverage_weight: float = 1.5
    margin_weight: float = 0.5
    threshold: float = 2.5


CALIBRATED = Params()


@dataclass(frozen=True)
class Candidate:
    """One passage's signals for one question."""

    index: int
    dense: float  # cosine similarity
    z: float  # cosine relative to the question's similarities with every passage
    margin: float  # z above the next best passage (how clearly this one stands out)
    coverage: float  # IDF-weighted share of the question's words the passage contains
    bm25: float
    hits: int  # question words in the passage's own heading

    def score(self, params: Params = CALIBRATED) -> float:
        """The hybrid score: dense relative similarity plus word coverage plus how much it stands out."""
        return self.z + params.coverage_weight * self.coverage + params.margin_weight * self.margin


def coverage(query: list[str], tokens: set[str], idf: dict[str, float]) -> float:
    """IDF-weighted share of the question's words that the passage contains."""
    if not query:
        return 0.0
    # A word the knowledge base never uses ("pizza") is the strongest sign of an out-of-scope question.
    unknown = max(idf.values(), default=1.0)

    def weight(token: str) -> float:
        return idf.get(token, unknown) * (GENERIC_WEIGHT if token in GENERIC else 1.0)

    total = sum(weight(token) for token in query)
    found = sum(weight(token) for token in query if related(token) & tokens)
    return found / total if total else 0.0


def title_hits(index: ProjectIndex, i: int, terms: list[str]) -> int:
    """How many question terms passage i's own (last) heading contains."""
    title = set(tokenize(index.passages[i].section.rsplit(" > ", 1)[-1]))
    return sum(1 for term in set(terms) if term in title)


def candidates(
    index: ProjectIndex, query: list[str], soft: list[str], qvec: np.ndarray, k: int = 10
) -> list[Candidate]:
    """The union of the BM25 and the dense top k, each with every signal, best hybrid score first."""
    if index.vectors is None or not len(index.passages):
        return []
    sims = index.vectors @ qvec.astype(np.float32)
    std = max(float(sims.std()), STD_FLOOR)
    z = (sims - float(sims.mean())) / std
    bm25 = dict(rank(index, query + soft, k))
    dense_top = [int(i) for i in np.argsort(-sims)[:k]]
    order = sorted(z, reverse=True)
    scored_query = query or soft
    out = []
    for i in dict.fromkeys(dense_top + list(bm25)):
        others = order[1] if len(order) > 1 and z[i] >= order[0] else order[0]
        margin = float(z[i] - others) if len(order) > 1 else 0.0
        out.append(
            Candidate(
                index=i,
                dense=float(sims[i]),
                z=float(z[i]),
                margin=margin,
                coverage=coverage(scored_query, index.token_set(i), index.idf),
                bm25=bm25.get(i, 0.0),
                hits=title_hits(index, i, query + soft),
            )
        )
    out.sort(key=lambda c: (-c.score(), -c.hits, -c.bm25))
    return out


def choose(found: list[Candidate], params: Params = CALIBRATED) -> Candidate | None:
    """The best candidate when its score clears the calibrated threshold, else None (refuse)."""
    if not found:
        return None
    best = max(found, key=lambda c: (c.score(params), c.hits, c.bm25))
    return best if best.score(params) >= params.threshold else None


def confidence(candidate: Candidate, params: Params = CALIBRATED) -> float:
    """0..1, 0.5 at the refusal threshold: how far the score is above it."""
    return 1.0 / (1.0 + math.exp(-(candidate.score(params) - params.threshold)))
