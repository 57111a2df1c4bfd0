"""Grounded answers: the best passage's most relevant sentences, or an honest fallback."""
from __future__ import annotations

from dataclasses import dataclass

from pymongo.database import Database

from voiceapp.config import Settings
from voiceapp.models import Passage, Reply
from voiceapp.dialog.knowledge import ProjectIndex, project_index, rank
from voiceapp.dialog.text import expansion_tokens, for_speech, sentences, tokenize

FALLBACK_TEXT = "Sorry, I don't know that, could you rephrase?"
# Share of the question's content words the passage must contain; below it we say we don't know.
MIN_COVERAGE = 0.5
MAX_SPEECH_CHARS = 300


@dataclass(frozen=True)
class Grounding:
    """The passage an answer comes from, how well it covers the question, and the chosen sentences."""

    passage: Passage
    coverage: float
    sentences: tuple[str, ...]

    @property
    def source(self) -> str:
        """'file#Last section', what Reply.sources records."""
        return f"{self.passage.source}#{self.passage.section.split(' > ')[-1]}"


def fallback_reply() -> Reply:
    """The polite 'I don't know' (intent 'fallback'): never invent an answer."""
    return Reply(text=FALLBACK_TEXT, intent="fallback", confidence=0.0)


def _coverage(query: list[str], tokens: set[str], idf: dict[str, float]) -> float:
    """IDF-weighted share of query words the passage contains (unknown words weigh the mean IDF)."""
    if not query:
        return 0.0
    unknown = sum(idf.values()) / len(idf) if idf else 1.0
    total = sum(idf.get(token, unknown) for token in query)
    found = sum(idf.get(token, unknown) for token in query if token in tokens)
    return found / total if total else 0.0


def _best_sentences(passage: Passage, query: list[str], soft: list[str], idf: dict[str, float]) -> list[str]:
    """One or two sentences of the passage that match the question best, in passage order."""
    candidates = sentences(passage.text)
    if not candidates:
        return []
    weights = {token: idf.get(token, 0.0) for token in query}
    for token in soft:
        weights.setdefault(token, 0.5 * idf.get(token, 0.0))
    scored = []
    for i, sentence in enumerate(candidates):
        tokens = set(tokenize(sentence))
        scored.append((sum(w for token, w in weights.items() if token in tokens), i))
    best_score, best = max(scored, key=lambda item: (item[0], -item[1]))
    chosen = [best]
    others = sorted((s for s in scored if s[1] != best), key=lambda item: (-item[0], item[1]))
    if others and best_score > 0 and others[0][0] >= 0.5 * best_score:
        chosen.append(others[0][1])
    return [candidates[i] for i in sorted(chosen)]


def _parent(passage: Passage) -> tuple[str, str]:
    return passage.source, passage.section.rsplit(" > ", 1)[0] if " > " in passage.section else ""


def _title_hits(passage: Passage, terms: list[str]) -> int:
    """How many question terms the passage's own (last) heading contains."""
    title = set(tokenize(passage.section.rsplit(" > ", 1)[-1]))
    return sum(1 for term in set(terms) if term in title)


def ground(index: ProjectIndex, question: str, k: int = 10) -> Grounding | None:
    """The passage among the top k that covers most of `question`, or None when none covers it."""
    query = tokenize(question)
    soft = expansion_tokens(question)
    # "Where are you?" has no content word: let the question word's terms stand in for it.
    scored_query = query or soft
    candidates = []
    for i, score in rank(index, query + soft, k):
        coverage = _coverage(scored_query, index.token_set(i), index.idf)
        if coverage >= MIN_COVERAGE:
            hits = _title_hits(index.passages[i], query + soft)
            candidates.append((coverage, hits, score, i))
    if not candidates:
        return None
    # Coverage first, then a section titled with the question's words, then BM25.
    candidates.sort(key=lambda item: (-item[0], -item[1], -item[2]))
    coverage, _, score, best = candidates[0]
    overview = _overview(index, scored_query, [c for c in candidates if abs(c[0] - coverage) < 1e-9])
    if overview is not None:
        return overview
    passage = index.passages[best]
    passage = Passage(passage.project, passage.source, passage.section, passage.text, round(score, 4))
    return Grounding(passage, coverage, tuple(_best_sentences(passage, query, soft, index.idf)))


def _overview(index: ProjectIndex, query: list[str], tied: list[tuple]) -> Grounding | None:
    """For a question about a parent heading ("opening hours?"), the first line of each subsection."""
    coverage, hits, score, best = tied[0]
    parent = _parent(index.passages[best])
    siblings = [i for _, _, _, i in tied if _parent(index.passages[i]) == parent]
    if hits or not parent[1] or len(siblings) < 2:
        return None
    if not set(query) <= set(tokenize(parent[1])):
        return None
    siblings = sorted(siblings)[:4]
    lines = [sentences(index.passages[i].text)[0] for i in siblings if index.passages[i].text.strip()]
    passage = Passage(index.passages[best].project, parent[0], parent[1], "\n".join(lines), round(score, 4))
    return Grounding(passage, coverage, tuple(lines))


def extractive_reply(grounding: Grounding) -> Reply:
    """A short spoken answer made only of the knowledge base's own sentences."""
    text = for_speech(" ".join(grounding.sentences), MAX_SPEECH_CHARS)
    return Reply(text=text, intent="question", confidence=round(grounding.coverage, 3), sources=(grounding.source,))


def respond(db: Database, settings: Settings, project: str, text: str, history: list[dict]) -> Reply:
    """Answer `text` for `project` from its knowledge base; a polite fallback when it has no answer."""
    index = project_index(db, settings, project)
    grounding = ground(index, text)
    if grounding is None:
        return fallback_reply()
    return extractive_reply(grounding)
