"""Grounded answers: the best passage's most relevant sentences, or an honest fallback."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pymongo.database import Database

from voiceapp.config import Settings
from voiceapp.dialog import background, embed, llm, numbers_ru, retrieval, spelling
from voiceapp.dialog.context import Exchange, exchanges, last_reply, resolve
from voiceapp.dialog.intents import QUESTION, Intent, classify
from voiceapp.dialog.knowledge import ProjectIndex, project_index, rank
from voiceapp.dialog.text import STOPWORDS, expansion_tokens, for_speech, language_of, sentences, stem, tokenize, words
from voiceapp.errors import VoiceError
from voiceapp.models import Passage, Reply

log = logging.getLogger(__name__)

FALLBACK_TEXT = "Sorry, I don't know that, could you rephrase?"
# Canned replies by language of the visitor's words (the seed's visitors speak Russian).
CANNED = {
    "en": {
        "fallback": FALLBACK_TEXT,
        "greeting": "Hello! Ask me anything about this site.",
        "goodbye": "Goodbye, and thanks for stopping by!",
        "thanks": "You're welcome! Anything else?",
        "help": "You can ask me questions{about}.",
        "help_site": " about this site",
        "help_topics": " about {topics}",
        "nothing_yet": "I haven't said anything yet. What would you like to know?",
        "stop": "Okay.",
        "human": "I can't transfer you myself, but you can reach a person here.",
        "navigate": "Opening the {target} page.",
    },
    "ru": {
        "fallback": "Извините, я этого не знаю. Не могли бы вы перефразировать?",
        "greeting": "Здравствуйте! Спросите меня о чём угодно на этом сайте.",
        "goodbye": "До свидания, спасибо, что заглянули!",
        "thanks": "Пожалуйста! Что-нибудь ещё?",
        "help": "Вы можете спросить меня{about}.",
        "help_site": " об этом сайте",
        "help_topics": " о темах: {topics}",
        "nothing_yet": "Я пока ничего не сказал. Что вы хотите узнать?",
        "stop": "Хорошо.",
        "human": "Я не могу сам соединить вас с человеком, но связаться можно так.",
        "navigate": "Открываю страницу «{target}».",
    },
}
# Without embeddings (DIALOG_EMBEDDINGS=off): share of the question's content words the passage must contain.
MIN_COVERAGE = 0.55
GENERIC = retrieval.GENERIC
MAX_SPEECH_CHARS = 300
# Longer questions are cut for retrieval (the front caps transcripts and texts far below a megabyte anyway).
MAX_QUESTION_CHARS = 1000


@dataclass(frozen=True)
class Grounding:
    """The passage an answer comes from, how well it covers the question, and the chosen sentences."""

    passage: Passage
    coverage: float
    sentences: tuple[str, ...]
    question: str = ""
    strength: float | None = None  # hybrid confidence (0.5 at the refusal threshold); None on the BM25-only path
    runners_up: tuple[Passage, ...] = ()  # the next passages of the hybrid ranking (more grounding for an LLM)

    @property
    def source(self) -> str:
        """'file#Last section', what Reply.sources records."""
        return f"{self.passage.source}#{self.passage.section.split(' > ')[-1]}"


def fallback_reply(language: str = "en") -> Reply:
    """The polite 'I don't know' (intent 'fallback'): never invent an answer."""
    return Reply(text=CANNED.get(language, CANNED["en"])["fallback"], intent="fallback", confidence=0.0)


_coverage = retrieval.coverage


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
    overview = _overview(index, question, scored_query, [c for c in candidates if abs(c[0] - coverage) < 1e-9])
    if overview is not None:
        return overview
    passage = index.passages[best]
    passage = Passage(passage.project, passage.source, passage.section, passage.text, round(score, 4))
    return Grounding(passage, coverage, tuple(_best_sentences(passage, query, soft, index.idf)), question)


def hybrid_grounding(
    index: ProjectIndex, variants: list[tuple[str, list[retrieval.Candidate]]], params: retrieval.Params
) -> Grounding | None:
    """The passage of the first of the question's wordings that clears the bar (as rewritten, as said), or None."""
    # The follow-up's rewrite is what the visitor means: the words as said only answer when it finds nothing
    # ("А закрываетесь во сколько?" after a Sunday question drew Saturday's "закрываемся" more surely).
    chosen = next(((q, c, found) for q, found in variants if (c := retrieval.choose(found, params))), None)
    if chosen is None:
        return None
    question, choice, found = chosen
    best = choice.candidate
    query, soft = tokenize(question), expansion_tokens(question)
    strength = round(choice.confidence, 3)
    tied = [(c.coverage, c.hits, c.bm25, c.index) for c in found if abs(c.coverage - best.coverage) < 1e-9]
    tied.sort(key=lambda item: item[3] != best.index)
    ranked = sorted(found, key=lambda c: -c.pick_score(params))
    runners_up = tuple(_scored(index.passages[c.index], c.pick_score(params)) for c in ranked if c is not best)[:2]
    overview = _overview(index, question, query or soft, tied)
    if overview is not None:
        return Grounding(overview.passage, overview.coverage, overview.sentences, question, strength, runners_up)
    passage = _scored(index.passages[best.index], best.pick_score(params))
    picked = tuple(_best_sentences(passage, query, soft, index.idf))
    return Grounding(passage, best.coverage, picked, question, strength, runners_up)


def _scored(passage: Passage, score: float) -> Passage:
    return Passage(passage.project, passage.source, passage.section, passage.text, round(score, 4))


def _overview(index: ProjectIndex, question: str, query: list[str], tied: list[tuple]) -> Grounding | None:
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
    return Grounding(passage, coverage, tuple(lines), question)


def extractive_reply(grounding: Grounding) -> Reply:
    """A short spoken answer made only of the knowledge base's own sentences."""
    text = for_speech(" ".join(grounding.sentences), MAX_SPEECH_CHARS)
    confidence = grounding.coverage if grounding.strength is None else grounding.strength
    return Reply(text=text, intent="question", confidence=round(confidence, 3), sources=(grounding.source,))


# ---------------------------------------------------------------- backends


def _extractive(
    settings: Settings, question: str, grounding: Grounding, passages: list[Passage], history: list[Exchange]
) -> str | None:
    return " ".join(grounding.sentences)


def _llm(
    settings: Settings, question: str, grounding: Grounding, passages: list[Passage], history: list[Exchange]
) -> str | None:
    return llm.compose(settings, question, passages, history)


# Keyed by DIALOG_BACKEND; each turns a grounded question into reply text (None: no answer there).
BACKENDS: dict[str, Callable[..., str | None]] = {"extractive": _extractive, "llm": _llm}


def _compose(
    settings: Settings, question: str, grounding: Grounding, index: ProjectIndex, history: list[Exchange]
) -> Reply:
    """The reply from the configured backend; any backend failure falls back to the extractive one."""
    extractive = extractive_reply(grounding)
    backend = BACKENDS.get(settings.dialog_backend, _extractive)
    if backend is _extractive:
        return extractive
    where = (grounding.passage.source, grounding.passage.section)
    # The LLM sees what the hybrid retrieval ranked next (BM25's next best on the word-only path).
    more = list(grounding.runners_up) or [index.passages[i] for i, _ in rank(index, tokenize(question), 3)]
    passages = [grounding.passage, *[p for p in more if (p.source, p.section) != where][:2]]
    try:
        text = backend(settings, question, grounding, passages, history)
    except VoiceError as err:
        log.warning("dialog backend %s failed (%s), answering extractively", settings.dialog_backend, err.message)
        return extractive
    if not text:
        return extractive
    return Reply(
        text=for_speech(text, MAX_SPEECH_CHARS),
        intent="question",
        confidence=extractive.confidence,
        sources=extractive.sources,
    )


# ---------------------------------------------------------------- intents


def _topics(index: ProjectIndex) -> list[str]:
    """The knowledge base's top-level headings, for 'what can you do?'."""
    seen: list[str] = []
    for passage in index.passages:
        top = passage.section.split(" > ")[0]
        if top and top not in seen:
            seen.append(top)
    return seen[:5]


def _human_reply(index: ProjectIndex, confidence: float, says: dict[str, str]) -> Reply:
    grounding = ground(index, "phone email contact")
    actions = ({"type": "handoff"},)
    if grounding is None:
        return Reply(says["human"], "human", confidence, (), actions)
    text = for_speech(f"{says['human']} {' '.join(grounding.sentences)}", MAX_SPEECH_CHARS)
    return Reply(text, "human", confidence, (grounding.source,), actions)


def _navigate_reply(index: ProjectIndex, intent: Intent, says: dict[str, str]) -> Reply | None:
    """Open a page of the site when a knowledge source with a URL matches the target."""
    target = set(tokenize(intent.entities.get("target", "")))
    for passage in index.passages:
        is_url = passage.source.startswith(("http://", "https://", "/"))
        if is_url and target and target <= set(tokenize(f"{passage.source} {passage.section}")):
            action = {"type": "navigate", "url": passage.source}
            text = says["navigate"].format(target=intent.entities["target"])
            return Reply(text, "navigate", intent.confidence, (passage.source,), (action,))
    return None


def _help_reply(index: ProjectIndex, confidence: float, says: dict[str, str]) -> Reply:
    names = [re.sub(r"^about\s+", "", topic, flags=re.IGNORECASE).lower() for topic in _topics(index)]
    about = says["help_topics"].format(topics=", ".join(names)) if names else says["help_site"]
    return Reply(for_speech(says["help"].format(about=about)), "help", confidence)


def _intent_reply(intent: Intent, index: ProjectIndex, history: list[Exchange], language: str) -> Reply | None:
    """A reply for a confident non-question intent; None to treat the utterance as a question."""
    says, c = CANNED.get(language, CANNED["en"]), intent.confidence
    if intent.name in {"greeting", "thanks"}:
        return Reply(says[intent.name], intent.name, c)
    if intent.name == "goodbye":
        return Reply(says["goodbye"], "goodbye", c, (), ({"type": "end_session"},))
    if intent.name == "help":
        return _help_reply(index, c, says)
    if intent.name == "repeat":
        return Reply(last_reply(history) or says["nothing_yet"], "repeat", c)
    if intent.name == "stop":
        return Reply(says["stop"], "stop", c, (), ({"type": "stop"},))
    if intent.name == "human":
        return _human_reply(index, c, says)
    if intent.name == "navigate":
        return _navigate_reply(index, intent, says)
    return None


def _question_of(intent: Intent, text: str) -> str:
    """What to look up: a navigation request without a page to open asks about its target."""
    return intent.entities.get("target") or text if intent.name == "navigate" else text


# ---------------------------------------------------------------- entry point


def respond(db: Database, settings: Settings, project: str, text: str, history: list[dict]) -> Reply:
    """Answer `text` for `project`: small talk by intent, questions from the knowledge base, else a fallback."""
    return _spoken(_respond(db, settings, project, text, history))


def _spoken(reply: Reply) -> Reply:
    """A Russian reply with its times and numbers in words, as a person would say them (the reply is heard)."""
    if language_of(reply.text) != "ru":
        return reply
    return dataclasses.replace(reply, text=numbers_ru.speak_numbers(reply.text))


def _cleaned(text: str) -> str:
    """The question as retrieval reads it: no control characters, one line, at most MAX_QUESTION_CHARS."""
    text = "".join(c if c.isprintable() else " " for c in text[: MAX_QUESTION_CHARS * 4])
    return " ".join(text.split())[:MAX_QUESTION_CHARS]


def _respond(db: Database, settings: Settings, project: str, text: str, history: list[dict]) -> Reply:
    text = _cleaned(text if isinstance(text, str) else "")
    if not text:
        return fallback_reply()
    index = project_index(db, settings, project)
    turns = exchanges(history, settings.dialog_max_context_length)
    language = language_of(text)
    intent = classify(text)
    if intent.name != QUESTION and intent.confidence >= settings.dialog_intent_confidence_threshold:
        reply = _intent_reply(intent, index, turns, language)
        if reply is not None:
            return reply
    text = _question_of(intent, text)
    question = resolve(text, turns, index.idf)
    if _hybrid(settings, index):
        grounding = hybrid_grounding(index, question_variants(settings, index, question, text), retrieval.CALIBRATED)
    else:
        question, text = (spelling.normalize(index.speller, wording) for wording in (question, text))
        grounding = _better(ground(index, question), ground(index, text) if question != text else None)
    if grounding is None:
        return fallback_reply(language)
    return _compose(settings, grounding.question, grounding, index, turns)


def _hybrid(settings: Settings, index: ProjectIndex) -> bool:
    return embed.enabled(settings) and index.vectors is not None and len(index.passages) > 0


def question_variants(
    settings: Settings, index: ProjectIndex, question: str, said: str
) -> list[tuple[str, list[retrieval.Candidate]]]:
    """Candidates for the question as rewritten from context and, when different, as said (typos corrected)."""
    if index.hub is None:  # once per index version: the neutral questions' vectors are then remembered
        index.hub = retrieval.hub_of(index, embed.queries(settings, list(retrieval.NEUTRAL_QUESTIONS)))
    topics = background.vectors(settings)
    out = []
    for wording in _wordings(index, question, said):
        qvec = embed.query(settings, wording)
        meaning = _meaning(settings, index, wording, topics)
        out.append(
            (wording, retrieval.candidates(index, tokenize(wording), expansion_tokens(wording), qvec, 10, meaning))
        )
    return out


def _meaning(settings: Settings, index: ProjectIndex, wording: str, topics: np.ndarray) -> retrieval.Meaning:
    """The background and, when the question names a word the knowledge base lacks, its known words' vectors."""
    said = tuple(w for w in words(wording) if w not in STOPWORDS)
    stems = {w: stem(w) for w in said}
    if all(stems[w] in index.idf or stems[w] in retrieval.GENERIC for w in said):
        return retrieval.Meaning(topics, said)  # nothing unnamed: the residual would be the question itself
    known = [w for w in said if stems[w] in index.idf]
    return retrieval.Meaning(topics, said, embed.words(settings, known) if known else {})


def _wordings(index: ProjectIndex, question: str, said: str) -> list[str]:
    """The question as rewritten and as said, typos corrected, each also in its other (US/UK) spelling."""
    out = []
    for text in (question, said):
        fixed = spelling.normalize(index.speller, text)
        out += [fixed, spelling.other_spelling(index.speller, fixed) or fixed]
    return list(dict.fromkeys(out))


def prepare(db: Database, settings: Settings, project: str, text: str, history: list[dict]):
    """(index, question variants) as `respond` sees them for a knowledge question; for calibrating the decision."""
    index = project_index(db, settings, project)
    turns = exchanges(history, settings.dialog_max_context_length)
    text = _question_of(classify(text), text)
    return index, question_variants(settings, index, resolve(text, turns, index.idf), text)


def _better(resolved: Grounding | None, original: Grounding | None) -> Grounding | None:
    """The follow-up's rewritten question wins unless the words as said cover more."""
    if resolved is None or (original is not None and original.coverage > resolved.coverage + 1e-9):
        return original
    return resolved
