"""Voice sessions: create, look up (refusing expired ones), slide expiry, end."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from pymongo import ReturnDocument
from pymongo.database import Database

from voiceapp.config import Settings
from voiceapp.errors import BadRequest, SessionExpired, SessionNotFound

ACTIVE, ENDED = "active", "ended"
_SESSION_ID = re.compile(r"^[0-9a-f]{32}$")
_HIDDEN = {"_id": 0}


def utcnow() -> datetime:
    """Now, tz-aware UTC, at MongoDB's millisecond precision."""
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def as_utc(value: datetime) -> datetime:
    """A tz-aware UTC datetime (clients without tz_aware return naive UTC)."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def check_session_id(session_id: Any) -> str:
    """The id if it is 32 lowercase hex characters (uuid4().hex); SessionNotFound otherwise."""
    # Never let a dict ({"$ne": None}) or other non-string reach a query.
    if not isinstance(session_id, str) or not _SESSION_ID.match(session_id):
        raise SessionNotFound("voice session not found")
    return session_id


def _require_text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{name} must be a non-empty string", code="invalid_request")
    return value.strip()


def create_session(
    db: Database, settings: Settings, project: str, language: str, voice: str, user_id: str | None = None
) -> dict:
    """Insert an active session expiring settings.session_timeout seconds from now."""
    now = utcnow()
    doc = {
        "session_id": uuid.uuid4().hex,
        "project": _require_text("project", project),
        "language": _require_text("language", language),
        "voice": voice if isinstance(voice, str) else "",
        "user_id": user_id if isinstance(user_id, str) else None,
        "status": ACTIVE,
        "created_at": now,
        "last_activity_at": now,
        "expires_at": now + timedelta(seconds=settings.session_timeout),
    }
    db[settings.sessions_collection].insert_one(doc)
    doc.pop("_id", None)
    return doc


def _refuse_if_over(doc: dict | None, now: datetime) -> dict:
    if doc is None:
        raise SessionNotFound("voice session not found")
    if doc.get("status") != ACTIVE:
        raise SessionExpired("voice session has ended")
    # The TTL monitor deletes late (up to ~60 s, lazily on the emulator): check expiry ourselves.
    if as_utc(doc["expires_at"]) <= now:
        raise SessionExpired("voice session has expired")
    return doc


def get_session(db: Database, settings: Settings, session_id: str) -> dict:
    """The active session; SessionNotFound (unknown/malformed) or SessionExpired (expired/ended)."""
    session_id = check_session_id(session_id)
    doc = db[settings.sessions_collection].find_one({"session_id": session_id}, _HIDDEN)
    return _refuse_if_over(doc, utcnow())


def touch_session(db: Database, settings: Settings, session_id: str) -> dict:
    """Slide an active session's expiry to now + session_timeout; returns the updated session."""
    session_id = check_session_id(session_id)
    now = utcnow()
    doc = db[settings.sessions_collection].find_one_and_update(
        {"session_id": session_id, "status": ACTIVE, "expires_at": {"$gt": now}},
        {"$set": {"last_activity_at": now, "expires_at": now + timedelta(seconds=settings.session_timeout)}},
        projection=_HIDDEN,
        return_document=ReturnDocument.AFTER,
    )
    if doc is None:
        get_session(db, settings, session_id)  # raises the precise error
        raise SessionExpired("voice session has expired")
    return doc


def end_session(db: Database, settings: Settings, session_id: str) -> dict:
    """Mark the session ended (idempotent); SessionNotFound if it never existed."""
    session_id = check_session_id(session_id)
    now = utcnow()
    collection = db[settings.sessions_collection]
    doc = collection.find_one_and_update(
        {"session_id": session_id, "status": ACTIVE},
        {"$set": {"status": ENDED, "ended_at": now, "last_activity_at": now}},
        projection=_HIDDEN,
        return_document=ReturnDocument.AFTER,
    )
    if doc is None:
        doc = collection.find_one({"session_id": session_id}, _HIDDEN)
    if doc is None:
        raise SessionNotFound("voice session not found")
    return doc


def count_active_sessions(db: Database, settings: Settings, project: str | None = None) -> int:
    """Sessions still active and unexpired (for VOICE_MAX_CONCURRENT_SESSIONS)."""
    query: dict[str, Any] = {"status": ACTIVE, "expires_at": {"$gt": utcnow()}}
    if project is not None:
        query["project"] = _require_text("project", project)
    return db[settings.sessions_collection].count_documents(query)
