"""Questions the dialog refused, kept per project so the site owner learns what to add to the knowledge base."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
from pymongo import DESCENDING
from pymongo.database import Database
from pymongo.errors import PyMongoError

from voiceapp.config import Settings
from voiceapp.dialog import embed
from voiceapp.errors import BadRequest

log = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 500
MAX_LISTED = 2000
# Two questions are one topic at e5 cosine >= this. Measured: "Do you sell pizza?" / "Do you have pizza?" 0.94,
# "Do you repair laptops?" / "Can you fix my laptop?" 0.95; but "Do you sell pizza?" / "Do you sell cars?" 0.92.
SAME_TOPIC = 0.93
_SINCE = re.compile(r"^\s*(\d{1,4})\s*([hdw])\s*$")
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def record(
    db: Database, settings: Settings, project: str, question: str, session_id: str | None, turn_id: str | None
) -> bool:
    """Store one refused question; a storage failure is logged, never raised (the visitor's turn goes on)."""
    text = " ".join(question.split())[:MAX_QUESTION_CHARS]
    if not text:
        return False
    doc = {
        "project": project,
        "question": text,
        "session_id": session_id,
        "turn_id": turn_id,
        "asked_at": datetime.now(timezone.utc),
    }
    try:
        db[settings.unanswered_collection].insert_one(doc)
    except PyMongoError as err:
        log.warning("could not record an unanswered question of %s: %s", project, type(err).__name__)
        return False
    return True


def parse_since(value: str) -> timedelta:
    """'7d', '24h', '2w' -> a timedelta; BadRequest otherwise."""
    match = _SINCE.match(value or "")
    if match is None or int(match.group(1)) == 0:
        raise BadRequest("since must look like 24h, 7d or 2w", code="invalid_field")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@dataclass
class Group:
    """Near-duplicate refused questions: the most frequent wording first, how often, when last."""

    questions: dict[str, int] = field(default_factory=dict)
    count: int = 0
    last_asked: datetime | None = None
    sessions: set[str] = field(default_factory=set)
    last_session_id: str | None = None  # where it was last asked, so the owner can open that conversation
    last_turn_id: str | None = None

    def as_dict(self) -> dict:
        """JSON-ready: question (most asked wording), count, variants, sessions, last_asked and where."""
        ordered = sorted(self.questions.items(), key=lambda item: (-item[1], item[0]))
        return {
            "question": ordered[0][0],
            "count": self.count,
            "variants": [{"question": q, "count": n} for q, n in ordered],
            "sessions": len(self.sessions),
            "last_asked": self.last_asked.isoformat() if self.last_asked else None,
            "last_session_id": self.last_session_id,
            "last_turn_id": self.last_turn_id,
        }


def _key(question: str) -> str:
    return " ".join(re.findall(r"\w+", question.lower()))


def _vectors(settings: Settings, questions: list[str]) -> np.ndarray | None:
    if not embed.enabled(settings) or not questions:
        return None
    return np.stack([embed.query(settings, q) for q in questions])


def grouped(
    db: Database,
    settings: Settings,
    project: str,
    since: timedelta | None = None,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[dict]:
    """The project's refused questions (within `since`, or [start, end)), near-duplicates grouped, most frequent first."""
    query: dict = {"project": project}
    if since is not None:
        start = datetime.now(timezone.utc) - since
    window = {**({"$gte": start} if start else {}), **({"$lt": end} if end else {})}
    if window:
        query["asked_at"] = window
    rows = list(db[settings.unanswered_collection].find(query).sort("asked_at", DESCENDING).limit(MAX_LISTED))
    wordings: dict[str, list[dict]] = {}
    for row in rows:
        wordings.setdefault(_key(row["question"]), []).append(row)
    # The most asked wordings found the groups; the others join the group of their nearest member.
    keys = sorted(wordings, key=lambda k: -len(wordings[k]))
    vectors = _vectors(settings, [_most_common(wordings[k]) for k in keys])
    groups: list[tuple[list[int], Group]] = []  # (wordings in it, group)
    for i, key in enumerate(keys):
        home = _home(groups, vectors, i)
        if home is None:
            groups.append(([], Group()))
            home = groups[-1]
        home[0].append(i)
        for row in wordings[key]:
            _add(home[1], row)
    return [g.as_dict() for _, g in sorted(groups, key=lambda item: (-item[1].count, item[0][0]))]


def _most_common(rows: list[dict]) -> str:
    """The wording asked most often among rows of one normalised question (the newest on a tie)."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["question"]] = counts.get(row["question"], 0) + 1
    return max(counts, key=lambda q: counts[q])


def _home(groups: list[tuple[list[int], Group]], vectors: np.ndarray | None, i: int):
    """The group with a wording close enough to wording i (its nearest such member wins), or None."""
    if vectors is None or not groups:
        return None
    nearest = [float((vectors[members] @ vectors[i]).max()) for members, _ in groups]
    best = int(np.argmax(nearest))
    return groups[best] if nearest[best] >= SAME_TOPIC else None


def _add(group: Group, row: dict) -> None:
    group.questions[row["question"]] = group.questions.get(row["question"], 0) + 1
    group.count += 1
    if row.get("session_id"):
        group.sessions.add(str(row["session_id"]))
    asked = row.get("asked_at")
    if isinstance(asked, datetime):
        asked = asked if asked.tzinfo else asked.replace(tzinfo=timezone.utc)
        if group.last_asked is None or asked > group.last_asked:
            group.last_asked = asked
            group.last_session_id, group.last_turn_id = row.get("session_id"), row.get("turn_id")
