"""Visitor recordings and uncached reply audio: how long they are kept, and erasing one visitor's session.

VOICE_RECORDING_RETENTION: "turn" (default) keeps a recording exactly as long as its turn document (30 days,
or until the session is erased); "0" keeps none once it has been recognised; N keeps it at most N seconds.
Reply audio stored with VOICE_CACHE_AUDIO=false follows the same rule, except that "0" keeps it
REPLY_GRACE_S seconds so the client can still play it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from pymongo.database import Database

from voiceapp.config import Settings
from voiceapp.errors import NotFound

from .audio import REPLIES_BUCKET, UPLOADS_BUCKET, delete_audio, parse_audio_id
from .sessions import check_session_id, utcnow

log = logging.getLogger(__name__)

REPLY_GRACE_S = 600
# A recording younger than this may belong to a turn being created right now: the sweep leaves it alone.
ORPHAN_GRACE_S = 3600
SWEEP_LOCK = "voiceapp:retention:sweep"


def after_recognition(db: Database, settings: Settings, upload_id: str | None) -> bool:
    """The STT stage's hook: with retention 0 the recording goes as soon as its transcript is recorded."""
    if settings.retention_seconds != 0 or not upload_id:
        return False
    return delete_audio(db, upload_id, bucket=UPLOADS_BUCKET)


def _files(db: Database, bucket: str, query: dict[str, Any]) -> Iterable[dict[str, Any]]:
    return db[f"{bucket}.files"].find(query, {"_id": 1, "metadata": 1, "uploadDate": 1})


def _delete_all(db: Database, bucket: str, ids: Iterable[Any]) -> int:
    return sum(delete_audio(db, str(file_id), bucket=bucket) for file_id in ids)


def _existing_turns(db: Database, settings: Settings, field: str, values: list[Any]) -> set[Any]:
    if not values:
        return set()
    found = db[settings.interactions_collection].find({field: {"$in": values}}, {field: 1})
    return {doc.get(field) for doc in found}


def _sweep_uploads(db: Database, settings: Settings, now) -> int:
    retention = settings.retention_seconds
    deleted = 0
    if retention >= 0:
        # "0": the hook deletes at recognition; here, whatever a crash left behind once it is surely recognised.
        cutoff = now - timedelta(seconds=max(retention, 0 if retention else ORPHAN_GRACE_S))
        deleted += _delete_all(
            db, UPLOADS_BUCKET, (f["_id"] for f in _files(db, UPLOADS_BUCKET, {"uploadDate": {"$lt": cutoff}}))
        )
    old = list(_files(db, UPLOADS_BUCKET, {"uploadDate": {"$lt": now - timedelta(seconds=ORPHAN_GRACE_S)}}))
    kept = _existing_turns(db, settings, "upload_id", [str(f["_id"]) for f in old])
    return deleted + _delete_all(db, UPLOADS_BUCKET, (f["_id"] for f in old if str(f["_id"]) not in kept))


def _sweep_replies(db: Database, settings: Settings, now) -> int:
    retention = settings.retention_seconds
    uncached = {"metadata.cache": False}
    deleted = 0
    if retention >= 0:
        cutoff = now - timedelta(seconds=retention if retention > 0 else REPLY_GRACE_S)
        expired = _files(db, REPLIES_BUCKET, {**uncached, "uploadDate": {"$lt": cutoff}})
        deleted += _delete_all(db, REPLIES_BUCKET, (f["_id"] for f in expired))
    old = list(_files(db, REPLIES_BUCKET, {**uncached, "uploadDate": {"$lt": now - timedelta(seconds=ORPHAN_GRACE_S)}}))
    turn_ids = [(f.get("metadata") or {}).get("turn_id") for f in old]
    kept = _existing_turns(db, settings, "turn_id", [t for t in turn_ids if t])
    orphans = (f["_id"] for f, t in zip(old, turn_ids, strict=True) if t not in kept)
    return deleted + _delete_all(db, REPLIES_BUCKET, orphans)


def sweep(db: Database, settings: Settings) -> dict[str, int]:
    """Delete recordings and uncached replies past their retention or whose turn is gone; counts per bucket."""
    now = utcnow()
    return {"uploads": _sweep_uploads(db, settings, now), "replies": _sweep_replies(db, settings, now)}


def erase_session(db: Database, settings: Settings, session_id: str, redis_client=None) -> dict[str, int]:
    """Erase one visitor's session: its recordings, uncached replies, turns, session document and events."""
    session_id = check_session_id(session_id)
    owned = {"metadata.session_id": session_id}
    turns = list(db[settings.interactions_collection].find({"session_id": session_id}, {"upload_id": 1, "tts": 1}))
    uploads = {f["_id"] for f in _files(db, UPLOADS_BUCKET, owned)}
    uploads |= {parse_audio_id(t["upload_id"]) for t in turns if _is_id(t.get("upload_id"))}
    replies = {f["_id"] for f in _files(db, REPLIES_BUCKET, {**owned, "metadata.cache": False})}
    counts = {
        "recordings": _delete_all(db, UPLOADS_BUCKET, uploads),
        "replies": _delete_all(db, REPLIES_BUCKET, replies),
        "turns": db[settings.interactions_collection].delete_many({"session_id": session_id}).deleted_count,
        "sessions": db[settings.sessions_collection].delete_many({"session_id": session_id}).deleted_count,
        # The owner's unanswered list keeps the visitor's own words: they go too.
        "unanswered": db[settings.unanswered_collection].delete_many({"session_id": session_id}).deleted_count,
    }
    if redis_client is not None:  # transcripts and replies also live in the session's replay stream
        from voiceapp.events import KEY_PREFIX

        keys = list(redis_client.scan_iter(match=f"{KEY_PREFIX}:{session_id}:*", count=500))
        counts["event_keys"] = redis_client.delete(*keys) if keys else 0
    return counts


def _is_id(value: Any) -> bool:
    try:
        parse_audio_id(value)
    except NotFound:
        return False
    return True


def start_sweeper(rt, interval_s: float) -> threading.Thread:
    """A daemon thread sweeping every `interval_s`; a Redis lock lets one process sweep per interval."""

    def run() -> None:
        while True:
            time.sleep(interval_s)
            try:
                if rt.redis.set(SWEEP_LOCK, "1", nx=True, ex=max(1, int(interval_s * 0.9))):
                    counts = sweep(rt.db, rt.settings)
                    if any(counts.values()):
                        log.info("retention sweep deleted %s", counts)
            except Exception as err:  # noqa: BLE001 - the sweeper must outlive any outage
                log.warning("retention sweep failed: %s", err)

    thread = threading.Thread(target=run, name="voiceapp-retention", daemon=True)
    thread.start()
    return thread
