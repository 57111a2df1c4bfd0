"""What the console shows, read from MongoDB (and Redis event streams): conversations, unanswered, costs, speed."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from pymongo import ASCENDING
from pymongo.database import Database

from voiceapp.config import Settings
from voiceapp.errors import BadRequest
from voiceapp.storage.audio import REPLIES_BUCKET, UPLOADS_BUCKET
from voiceapp.storage.sessions import as_utc, check_session_id

SPANS = {"day": 1, "week": 7}
MAX_TURNS = 1000  # a page never loads more turns than this (the emulator is slow on big reads)
STAGES = ("stt_queue_s", "stt_s", "dialog_queue_s", "dialog_s", "tts_queue_s", "tts_s", "total_s")
FALLBACK_INTENT = "fallback"


@dataclass(frozen=True)
class Period:
    """A half-open UTC interval [start, end) named by its first day and span."""

    start: datetime
    end: datetime
    span: str

    @property
    def day(self) -> str:
        """The first day, e.g. 2026-12-03."""
        return self.start.strftime("%Y-%m-%d")

    def shifted(self, direction: int) -> str:
        """The last day of the previous (-1) or next (+1) period of the same span."""
        return (self.end - timedelta(days=1) + direction * (self.end - self.start)).strftime("%Y-%m-%d")

    @property
    def end_day(self) -> str:
        """The last day, the one the period is named by in the URL (?day=)."""
        return (self.end - timedelta(days=1)).strftime("%Y-%m-%d")


def period(day: str | None, span: str | None, now: datetime | None = None) -> Period:
    """The period ending with `day` (default today, UTC) of `span` ('day' or 'week'); BadRequest otherwise."""
    span = span or "day"
    if span not in SPANS:
        raise BadRequest("span must be 'day' or 'week'", code="invalid_field")
    try:
        last = date.fromisoformat(day) if day else (now or datetime.now(timezone.utc)).date()
    except ValueError:
        raise BadRequest("day must look like 2026-12-03", code="invalid_field") from None
    end = datetime.combine(last + timedelta(days=1), time(), tzinfo=timezone.utc)
    return Period(end - timedelta(days=SPANS[span]), end, span)


# ---------------------------------------------------------------- conversations


@dataclass
class Conversation:
    """One session's turns within the period, oldest first."""

    session_id: str
    session: dict[str, Any] | None
    turns: list[dict[str, Any]] = field(default_factory=list)

    @property
    def started(self) -> datetime:
        """When its first shown turn happened."""
        return as_utc(self.turns[0]["timestamp"])


def turns_in(
    db: Database, settings: Settings, project: str, when: Period, limit: int = MAX_TURNS, session_id: str | None = None
) -> list[dict]:
    """The project's turns of the period (of one session when given), oldest first (at most `limit`)."""
    query: dict[str, Any] = {"project": project, "timestamp": {"$gte": when.start, "$lt": when.end}}
    if session_id is not None:
        query["session_id"] = check_session_id(session_id)
    cursor = db[settings.interactions_collection].find(query, {"_id": 0}).sort("timestamp", ASCENDING).limit(limit)
    return list(cursor)


def conversations(
    db: Database, settings: Settings, project: str, when: Period, session_id: str | None = None
) -> list[Conversation]:
    """Sessions with turns in the period, newest first; a session document may be gone (TTL) while turns stay."""
    grouped: dict[str, Conversation] = {}
    for turn in turns_in(db, settings, project, when, session_id=session_id):
        sid = turn["session_id"]
        grouped.setdefault(sid, Conversation(sid, None)).turns.append(turn)
    if grouped:
        rows = db[settings.sessions_collection].find({"session_id": {"$in": list(grouped)}}, {"_id": 0})
        for row in rows:
            grouped[row["session_id"]].session = row
    return sorted(grouped.values(), key=lambda c: c.started, reverse=True)


def audio_ids(turn: dict[str, Any]) -> list[str]:
    """Ids of the reply's audio chunks (GridFS bucket voice_audio), in order."""
    tts = turn.get("tts") or {}
    ids = list(tts.get("audio_ids") or [])
    if not ids and turn.get("audio_id"):
        ids = [turn["audio_id"]]
    return [str(i) for i in ids]


def audio_belongs(db: Database, settings: Settings, project: str, bucket: str, audio_id: str) -> bool:
    """Whether a turn of `project` names this audio (uploads by upload_id, replies by tts.audio_ids/audio_id)."""
    if bucket == UPLOADS_BUCKET:
        query: dict[str, Any] = {"project": project, "upload_id": audio_id}
    elif bucket == REPLIES_BUCKET:
        query = {"project": project, "$or": [{"tts.audio_ids": audio_id}, {"audio_id": audio_id}]}
    else:
        return False
    return db[settings.interactions_collection].find_one(query, {"_id": 1}) is not None


# ---------------------------------------------------------------- unanswered questions


@dataclass(frozen=True)
class Unanswered:
    """One question the assistant could not answer, as most often worded, with how often it was asked."""

    text: str
    count: int
    last_asked: datetime
    last_session_id: str = ""  # where it was last asked, to open that conversation
    last_turn_id: str = ""


def unanswered_questions(db: Database, settings: Settings, project: str, when: Period) -> list[Unanswered]:
    """Questions the dialog refused in the period (its own store, as the API lists them), most frequent first."""
    from voiceapp.storage.unanswered import grouped

    return [
        Unanswered(
            group["question"],
            group["count"],
            datetime.fromisoformat(group["last_asked"]) if group["last_asked"] else when.start,
            group.get("last_session_id") or "",
            group.get("last_turn_id") or "",
        )
        for group in grouped(db, settings, project, start=when.start, end=when.end)
    ]


# ---------------------------------------------------------------- costs


@dataclass(frozen=True)
class DayCost:
    """TTS spend of one project on one UTC day, by provider."""

    day: str
    cost_usd: float
    characters: int
    cached_characters: int
    providers: dict[str, float]
    day_total_usd: float  # every project's spend that day: what VOICE_COST_ALERT_THRESHOLD compares
    alerted: bool


def _days(when: Period) -> list[str]:
    count = (when.end - when.start).days
    return [(when.start + timedelta(days=i)).strftime("%Y-%m-%d") for i in range(count)]


def daily_costs(db: Database, settings: Settings, project: str, when: Period) -> list[DayCost]:
    """One row per day of the period (zero when nothing was spent), from voice_analytics."""
    days = _days(when)
    coll = db[settings.analytics_collection]
    per_day: dict[str, dict[str, Any]] = {
        d: {"cost": 0.0, "chars": 0, "cached": 0, "providers": Counter()} for d in days
    }
    for row in coll.find({"kind": "tts_cost", "project": project, "day": {"$in": days}}):
        slot = per_day[row["day"]]
        slot["cost"] += float(row.get("cost_usd") or 0)
        slot["chars"] += int(row.get("characters") or 0)
        slot["cached"] += int(row.get("cached_characters") or 0)
        for name, usage in (row.get("providers") or {}).items():
            slot["providers"][name] += float((usage or {}).get("cost_usd") or 0)
    totals = {row["day"]: row for row in coll.find({"kind": "tts_cost_day", "day": {"$in": days}})}
    return [
        DayCost(
            day=d,
            cost_usd=round(per_day[d]["cost"], 6),
            characters=per_day[d]["chars"],
            cached_characters=per_day[d]["cached"],
            providers={k: round(v, 6) for k, v in sorted(per_day[d]["providers"].items())},
            day_total_usd=round(float(totals.get(d, {}).get("cost_usd") or 0), 6),
            alerted=bool(totals.get(d, {}).get("alerted")),
        )
        for d in days
    ]


# ---------------------------------------------------------------- speed


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (rank - low), 4)


@dataclass(frozen=True)
class Spread:
    """p50/p95 of one measure over the period's turns, and how many turns had it."""

    name: str
    p50: float | None
    p95: float | None
    count: int


def spread(name: str, values: list[float]) -> Spread:
    """p50/p95 of `values`."""
    return Spread(name, percentile(values, 50), percentile(values, 95), len(values))


def stage_spreads(turns: list[dict[str, Any]]) -> list[Spread]:
    """p50/p95 of each stage's time (and the queue waits) recorded on the turns."""
    out = []
    for stage in STAGES:
        values = [
            float(t["timings"][stage]) for t in turns if isinstance((t.get("timings") or {}).get(stage), (int, float))
        ]
        out.append(spread(stage, values))
    return out


def first_audio_seconds(turn: dict[str, Any], events: list[Any]) -> float | None:
    """End of speech -> first reply audio of one turn: recorded on the turn, else from its kept events.

    For an uploaded recording the upload's arrival (accepted_at) is the end of speech; a live utterance's end
    is not recorded, so its first audio counts from the final transcript (recognition time excluded).
    """
    recorded = (turn.get("timings") or {}).get("first_audio_s")
    if isinstance(recorded, (int, float)):
        return float(recorded)
    mine = [e for e in events if e.turn_id == turn.get("turn_id")]
    audio = [e.ts for e in mine if str(e.type) == "audio"]
    if not audio:
        return None
    if turn.get("source") == "ws-live":
        finals = [e.ts for e in mine if str(e.type) == "transcript" and e.data.get("final", True)]
        start = min(finals) if finals else None
    else:
        start = turn.get("accepted_at")
    if not start:
        return None
    return round(max(0.0, min(audio) - float(start)), 4)


def cache_ratio(turns: list[dict[str, Any]]) -> tuple[int, int]:
    """(hits, misses) of the TTS audio cache over the turns' sentences."""
    hits = sum(int((t.get("tts") or {}).get("cache_hits") or 0) for t in turns)
    misses = sum(int((t.get("tts") or {}).get("cache_misses") or 0) for t in turns)
    return hits, misses


def turns_per_hour(turns: list[dict[str, Any]], when: Period) -> list[tuple[str, int]]:
    """(hour label, turns started) for every hour of the period (a week: every day's hours summed by day)."""
    if when.span == "day":
        counts = Counter(as_utc(t["timestamp"]).hour for t in turns)
        return [(f"{h:02d}", counts.get(h, 0)) for h in range(24)]
    per_day = Counter(as_utc(t["timestamp"]).strftime("%Y-%m-%d") for t in turns)
    return [(d[5:], per_day.get(d, 0)) for d in _days(when)]


# ---------------------------------------------------------------- projects


def known_projects(db: Database, settings: Settings) -> list[str]:
    """Every project with a key, plus open projects (for the operator's list)."""
    names = {row["project"] for row in db[settings.projects_collection].find({}, {"project": 1}) if row.get("project")}
    return sorted(names | set(settings.open_projects))


@dataclass(frozen=True)
class ProjectSummary:
    """One line of the operator's project list."""

    project: str
    turns_today: int
    unanswered_week: int


def project_summaries(db: Database, settings: Settings, projects: list[str]) -> list[ProjectSummary]:
    """Turns today and fallback answers this week per project (two counts each)."""
    today, week = period(None, "day"), period(None, "week")
    coll = db[settings.interactions_collection]
    return [
        ProjectSummary(
            name,
            coll.count_documents({"project": name, "timestamp": {"$gte": today.start, "$lt": today.end}}),
            coll.count_documents(
                {"project": name, "intent": FALLBACK_INTENT, "timestamp": {"$gte": week.start, "$lt": week.end}}
            ),
        )
        for name in projects
    ]
