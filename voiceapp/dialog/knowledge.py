"""Per-project knowledge base: split documents into passages, store them, search with BM25."""

from __future__ import annotations

import html.parser
import math
import re
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import bm25s
import numpy as np
from pymongo import ASCENDING
from pymongo.database import Database

from voiceapp.config import Settings
from voiceapp.dialog import embed
from voiceapp.dialog.spelling import Speller
from voiceapp.dialog.text import sentences, tokenize
from voiceapp.errors import BadRequest
from voiceapp.models import Passage
from voiceapp.storage.mongo import knowledge_meta_collection

Format = Literal["markdown", "text", "html"]
DEMO_KB = Path(__file__).resolve().parent.parent / "demo" / "kb"
MAX_PASSAGE_WORDS = 120
_SUFFIX_FORMATS = {".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html"}
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


# ---------------------------------------------------------------- splitting


def guess_format(source: str) -> Format:
    """markdown / html / text from the source name's extension."""
    return _SUFFIX_FORMATS.get(Path(source).suffix.lower(), "text")  # type: ignore[return-value]


# Each bracketed part excludes its own opener, so a run of '[', '(' or '<' is scanned once, not once per
# character (the former patterns took seconds on a few KB of '[[[[' and blocked the API worker).
_IMAGE = re.compile(r"!\[[^\[\]]*\]\([^()]*\)")
_LINK = re.compile(r"\[([^\[\]]+)\]\([^()]*\)")
_TAG = re.compile(r"<[^<>]+>")
_LIST_MARK = re.compile(r"^[ \t]*(?:[-*+]|\d+[.)])[ \t]+", re.MULTILINE)
_RULER_CHARS = frozenset(" \t\r\f\v:|-")


def _is_ruler(line: str) -> bool:
    """A table ruler or horizontal rule: only '-', ':', '|' and spaces (checked without a regex: no backtracking)."""
    return bool(line.strip()) and set(line) <= _RULER_CHARS


def _clean_markdown(text: str) -> str:
    text = _IMAGE.sub("", text)
    text = _LINK.sub(r"\1", text)
    text = _TAG.sub("", text)
    text = re.sub(r"(\*\*|__|\*|`)", "", text)
    text = _LIST_MARK.sub("", text)
    # The former `^\s*\|?[\s:|-]+\|?\s*$` let \s cross lines: cubic on a line of spaces (2.5 KB: 13 s).
    text = "\n".join("" if _is_ruler(line) else line for line in text.split("\n"))
    text = text.replace("|", ", ")
    return text


def _chunks(body: str) -> list[str]:
    """Paragraph groups of at most MAX_PASSAGE_WORDS words (a longer paragraph stays whole)."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", body) if p.strip()]
    chunks: list[str] = []
    current: list[str] = []
    count = 0
    for paragraph in paragraphs:
        size = len(paragraph.split())
        if current and count + size > MAX_PASSAGE_WORDS:
            chunks.append("\n".join(current))
            current, count = [], 0
        current.append(paragraph)
        count += size
    if current:
        chunks.append("\n".join(current))
    return chunks


def _split_markdown(text: str, source: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []
    body: list[str] = []

    def flush() -> None:
        section = " > ".join(title for _, title in stack) or Path(source).stem
        for chunk in _chunks(_clean_markdown("\n".join(body))):
            out.append((section, chunk))
        body.clear()

    for line in text.splitlines():
        match = _HEADING.match(line)
        if match is None:
            if not line.strip().startswith("```"):
                body.append(line)
            continue
        flush()
        level = len(match.group(1))
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, _clean_markdown(match.group(2)).strip()))
    flush()
    return out


class _HtmlToMarkdown(html.parser.HTMLParser):
    """Headings become '#' lines, blocks become paragraphs; scripts, styles and nav are dropped."""

    _SKIP = frozenset({"script", "style", "noscript", "template", "head", "nav", "svg"})
    _BLOCK = frozenset(
        {"p", "div", "li", "br", "tr", "section", "article", "ul", "ol", "table", "dd", "dt", "blockquote"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self._BLOCK:
            self.parts.append("\n\n" if tag in {"p", "div", "section", "article"} else "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif re.fullmatch(r"h[1-6]", tag) or tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(re.sub(r"[ \t\r\f\v]+", " ", data.replace("\n", " ")))

    def markdown(self) -> str:
        """The collected text as simple Markdown."""
        return "".join(self.parts)


def split_passages(text: str, source: str, fmt: Format | None = None) -> list[tuple[str, str]]:
    """(section, text) passages; Markdown/HTML headings become sections, long bodies are chunked."""
    fmt = fmt or guess_format(source)
    if fmt == "markdown":
        return _split_markdown(text, source)
    if fmt == "html":
        parser = _HtmlToMarkdown()
        parser.feed(text)
        parser.close()
        return _split_markdown(parser.markdown(), source)
    if fmt == "text":
        return [(Path(source).stem, chunk) for chunk in _chunks(text)]
    raise BadRequest(f"unknown document format {fmt!r}: use markdown, text or html", code="invalid_request")


# ---------------------------------------------------------------- storing


def _check_project(project: str) -> str:
    if not isinstance(project, str) or not project.strip() or project.startswith("$"):
        raise BadRequest("project must be a non-empty string", code="invalid_request")
    return project.strip()


def _bump_version(db: Database, settings: Settings, project: str) -> None:
    # A random stamp (not just a counter) so a dropped and re-filled database never looks unchanged.
    db[knowledge_meta_collection(settings)].update_one(
        {"_id": project},
        {"$set": {"stamp": uuid.uuid4().hex, "updated_at": datetime.now(timezone.utc)}, "$inc": {"version": 1}},
        upsert=True,
    )


def add_documents(
    db: Database, settings: Settings, project: str, docs: Iterable[tuple[str, str]], fmt: Format | None = None
) -> int:
    """Store the passages of each (source, text), replacing that source's old ones; returns the count."""
    project = _check_project(project)
    collection = db[settings.knowledge_collection]
    now = datetime.now(timezone.utc)
    total = 0
    for source, text in docs:
        passages = split_passages(text, source, fmt)
        collection.delete_many({"project": project, "source": source})
        rows = [
            {"project": project, "source": source, "section": section, "text": body, "position": i, "added_at": now}
            for i, (section, body) in enumerate(passages)
        ]
        _attach_embeddings(settings, rows)
        if rows:
            collection.insert_many(rows)
        total += len(rows)
    _bump_version(db, settings, project)
    return total


def _attach_embeddings(settings: Settings, rows: list[dict]) -> None:
    """Store each passage's dense vectors with it (whole passage, and each sentence), so a query only embeds
    the question; a sentence alone matches a short question more sharply than its whole passage."""
    if not rows or not embed.enabled(settings):
        return
    texts = [embed.passage_text(row["section"], row["text"]) for row in rows]
    per_row = [[embed.passage_text(row["section"].split(" > ")[-1], s) for s in sentences(row["text"])] for row in rows]
    vectors = embed.passages(settings, texts + [text for group in per_row for text in group])
    at = len(rows)
    for i, (row, group) in enumerate(zip(rows, per_row, strict=True)):
        row["embedding"] = _stored(vectors[i])
        row["sentence_embeddings"] = [_stored(v) for v in vectors[at : at + len(group)]]
        row["embedding_model"] = embed.MODEL_NAME
        at += len(group)


def _stored(vector: np.ndarray) -> list[float]:
    return [round(float(x), 6) for x in vector]


def remove_documents(db: Database, settings: Settings, project: str, sources: Iterable[str] | None = None) -> int:
    """Delete the named sources (all of the project's when None); returns passages deleted."""
    project = _check_project(project)
    query: dict = {"project": project}
    if sources is not None:
        query["source"] = {"$in": [str(source) for source in sources]}
    deleted = db[settings.knowledge_collection].delete_many(query).deleted_count
    _bump_version(db, settings, project)
    return deleted


def list_sources(db: Database, settings: Settings, project: str) -> dict[str, int]:
    """Source name -> number of passages, for the project."""
    counts: dict[str, int] = {}
    for row in db[settings.knowledge_collection].find({"project": _check_project(project)}, {"source": 1}):
        counts[row["source"]] = counts.get(row["source"], 0) + 1
    return counts


def load_directory(db: Database, settings: Settings, project: str, path: str | Path) -> int:
    """Add every .md/.markdown/.html/.htm/.txt file under `path` (names relative to it)."""
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in {*_SUFFIX_FORMATS, ".txt"})
    docs = [(str(p.relative_to(root)), p.read_text(encoding="utf-8")) for p in files]
    return add_documents(db, settings, project, docs)


def load_demo(db: Database, settings: Settings, project: str = "demo") -> int:
    """Load the shipped Vertebro Coffee knowledge base into `project`."""
    return load_directory(db, settings, project, DEMO_KB)


# ---------------------------------------------------------------- searching


@dataclass
class ProjectIndex:
    """A project's passages with their BM25 index, valid for one KB version stamp."""

    stamp: str | None
    passages: list[Passage]
    tokens: list[list[str]]
    retriever: bm25s.BM25 | None
    idf: dict[str, float]
    vectors: np.ndarray | None = None  # (passages, 384) unit vectors; None when embeddings are off
    sentence_vectors: np.ndarray | None = None  # (sentences, 384), passage by passage
    sentence_owner: np.ndarray | None = None  # passage number of each sentence vector
    speller: Speller | None = None  # the knowledge base's words, to correct a question's typos
    hub: np.ndarray | None = None  # per passage, its pull on questions that say nothing (retrieval.hub_of)

    def token_set(self, i: int) -> set[str]:
        """Tokens of passage i (section title included)."""
        return set(self.tokens[i])


_indexes: dict[tuple, ProjectIndex] = {}
_lock = threading.Lock()


def _build(db: Database, settings: Settings, project: str, stamp: str | None) -> ProjectIndex:
    rows = list(
        db[settings.knowledge_collection]
        .find({"project": project})
        .sort([("source", ASCENDING), ("position", ASCENDING)])
    )
    passages = [Passage(project, row["source"], row["section"], row["text"]) for row in rows]
    tokens = [tokenize(f"{p.section.replace(' > ', ' ')} {p.text}") for p in passages]
    retriever = None
    if passages:
        retriever = bm25s.BM25()
        retriever.index(tokens, show_progress=False)
    df: dict[str, int] = {}
    for toks in tokens:
        for token in set(toks):
            df[token] = df.get(token, 0) + 1
    n = len(passages)
    idf = {token: math.log(1 + (n - count + 0.5) / (count + 0.5)) for token, count in df.items()}
    speller = Speller.of(f"{p.section.replace(' > ', ' ')} {p.text}" for p in passages)
    index = ProjectIndex(stamp, passages, tokens, retriever, idf, speller=speller)
    _load_vectors(db, settings, rows, index)
    return index


def _load_vectors(db: Database, settings: Settings, rows: list[dict], index: ProjectIndex) -> None:
    """The stored vectors into `index`; passages stored before embeddings existed are embedded and saved once."""
    if not embed.enabled(settings):
        return
    missing = [
        row for row in rows if row.get("embedding_model") != embed.MODEL_NAME or "sentence_embeddings" not in row
    ]
    if missing:
        _attach_embeddings(settings, missing)
        collection = db[settings.knowledge_collection]
        for row in missing:
            fields = {k: row[k] for k in ("embedding", "sentence_embeddings", "embedding_model")}
            collection.update_one({"_id": row["_id"]}, {"$set": fields})
    index.vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float32).reshape(len(rows), embed.DIM)
    owner = [i for i, row in enumerate(rows) for _ in row["sentence_embeddings"]]
    flat = [v for row in rows for v in row["sentence_embeddings"]]
    index.sentence_vectors = np.asarray(flat, dtype=np.float32).reshape(len(flat), embed.DIM)
    index.sentence_owner = np.asarray(owner, dtype=np.int64)


def project_index(db: Database, settings: Settings, project: str) -> ProjectIndex:
    """The cached index of `project`, rebuilt when its KB version stamp changed."""
    project = _check_project(project)
    meta = db[knowledge_meta_collection(settings)].find_one({"_id": project}) or {}
    stamp = meta.get("stamp")
    # The random stamp keeps this correct even if two servers share a database name.
    key = (frozenset(db.client.nodes), db.name, settings.knowledge_collection, project)
    with _lock:
        cached = _indexes.get(key)
        if cached is not None and cached.stamp == stamp and stamp is not None:
            return cached
    built = _build(db, settings, project, stamp)
    with _lock:
        _indexes[key] = built
    return built


def rank(index: ProjectIndex, query_tokens: list[str], k: int) -> list[tuple[int, float]]:
    """(passage number, BM25 score) of the best k passages with a positive score."""
    if index.retriever is None or not query_tokens:
        return []
    k = min(k, len(index.passages))
    docs, scores = index.retriever.retrieve([query_tokens], k=k, show_progress=False)
    return [(int(d), float(s)) for d, s in zip(docs[0], scores[0], strict=True) if s > 0]


def search(db: Database, settings: Settings, project: str, query: str, k: int = 3) -> list[Passage]:
    """The project's k passages best matching `query` (BM25), best first; [] when nothing matches."""
    index = project_index(db, settings, project)
    found = rank(index, tokenize(query), k)
    return [_scored(index.passages[i], score) for i, score in found]


def _scored(passage: Passage, score: float) -> Passage:
    return Passage(passage.project, passage.source, passage.section, passage.text, round(score, 4))
