"""One document per turn of a session, in settings.interactions_collection."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from pymongo import DESCENDING, ReturnDocument
from pymongo.database import Database

from voiceapp.config import Settings
from voiceapp.errors import NotFound
from voiceapp.storage.sessions import check_session_id, utcnow
from voiceapp.turns import Turn, TurnStatus

QUEUED = TurnStatus.QUEUED.value
_TURN_ID = re.compile(r"^[0-9a-f]{32}$")
_PROTECTED = {"_id", "turn_id", "session_id", "project", "timestamp"}


def check_turn_id(turn_id: Any) -> str:
    """The id if it is 32 lowercase hex characters; NotFound otherwise."""
    if not isinstance(turn_id, str) or not _TURN_ID.match(turn_id):
        raise NotFound("turn not found", code="turn_not_found")
    return turn_id


def new_turn_id() -> str:
    """A fresh turn id (uuid4 hex), reserved before its turn is recorded."""
    return uuid.uuid4().hex


def create_turn(
    db: Database, settings: Settings, session: dict, upload_id: str | None, *, turn_id: str | None = None, **fields: Any
) -> str:
    """Insert a turn for `session` (queued unless `fields` say otherwise); returns turn_id (uuid4 hex).

    A live utterance passes its own id; inserting it twice raises DuplicateKeyError.
    """
    turn_id = check_turn_id(turn_id) if turn_id is not None else new_turn_id()
    now = utcnow()
    doc = {
        "language": session.get("language"),
        "voice": session.get("voice"),
        "status": QUEUED,
        **_checked_fields(fields),
        # turn_id doubles as _id so lookups use the _id index (the seed's indexes stay exact).
        "_id": turn_id,
        "turn_id": turn_id,
        "session_id": check_session_id(session["session_id"]),
        "project": session["project"],
        "upload_id": upload_id,
        "timestamp": now,
        "updated_at": now,
    }
    db[settings.interactions_collection].insert_one(doc)
    return turn_id


def _checked_fields(fields: dict[str, Any]) -> dict[str, Any]:
    for name in fields:
        if name.startswith("$") or name in _PROTECTED:
            raise ValueError(f"turn field {name!r} cannot be set")
    return fields


def update_turn(db: Database, settings: Settings, turn_id: str, **fields: Any) -> None:
    """$set `fields` on the turn (idempotent); NotFound for an unknown turn."""
    turn_id = check_turn_id(turn_id)
    update = {**_checked_fields(fields), "updated_at": utcnow()}
    result = db[settings.interactions_collection].update_one({"_id": turn_id}, {"$set": update})
    if result.matched_count == 0:
        raise NotFound("turn not found", code="turn_not_found")


def claim_turn(
    db: Database, settings: Settings, turn_id: str, ready: str, running: str, owner: str, lease_s: float
) -> Turn | None:
    """Atomically move the turn from `ready` (or a lapsed claim of `running`) to `running`; the turn, or None.

    One conditional update, so of two copies of a stage task exactly one gets the turn; a claim whose
    worker died stops being renewed and can be taken over once its lease has run out.
    """
    now = time.time()
    lapsed = {"status": running, "claim_until": {"$lt": now}}
    return db[settings.interactions_collection].find_one_and_update(
        {"_id": check_turn_id(turn_id), "$or": [{"status": ready}, lapsed]},
        {
            "$set": {
                "status": running,
                "claimed_by": owner,
                "claimed_at": now,
                "claim_until": now + lease_s,
                "updated_at": utcnow(),
            }
        },
        projection={"_id": 0},
        return_document=ReturnDocument.AFTER,
    )


def renew_claim(db: Database, settings: Settings, turn_id: str, running: str, owner: str, lease_s: float) -> bool:
    """Extend the lease of a claim `owner` still holds; False when it lost it."""
    result = db[settings.interactions_collection].update_one(
        {"_id": turn_id, "status": running, "claimed_by": owner}, {"$set": {"claim_until": time.time() + lease_s}}
    )
    return result.matched_count == 1


def finish_claim(db: Database, settings: Settings, turn_id: str, running: str, owner: str, **fields: Any) -> bool:
    """$set the stage's result (with its next status) if `owner` still holds the claim; False otherwise."""
    update = {**_checked_fields(fields), "claim_until": 0.0, "updated_at": utcnow()}
    result = db[settings.interactions_collection].update_one(
        {"_id": turn_id, "status": running, "claimed_by": owner}, {"$set": update}
    )
    return result.matched_count == 1


def release_claim(db: Database, settings: Settings, turn_id: str, running: str, ready: str, owner: str) -> None:
    """Give a claimed stage back (its task will retry), so the retry need not wait for the lease to run out."""
    db[settings.interactions_collection].update_one(
        {"_id": turn_id, "status": running, "claimed_by": owner},
        {"$set": {"status": ready, "claim_until": 0.0, "updated_at": utcnow()}},
    )


def mark_handed_off(db: Database, settings: Settings, turn_id: str) -> bool:
    """Record once that the turn's next stages were enqueued; False when that was already done."""
    coll = db[settings.interactions_collection]
    result = coll.update_one({"_id": turn_id, "handed_off": {"$ne": True}}, {"$set": {"handed_off": True}})
    if result.matched_count == 1:
        return True
    # No document at all (a caller enqueueing before recording): nothing to guard with.
    return coll.find_one({"_id": turn_id}, {"_id": 1}) is None


def undo_handed_off(db: Database, settings: Settings, turn_id: str) -> None:
    """The enqueue failed: let a retry hand the turn off again."""
    db[settings.interactions_collection].update_one({"_id": turn_id}, {"$unset": {"handed_off": ""}})


def get_turn(db: Database, settings: Settings, session_id: str, turn_id: str) -> Turn:
    """The turn if it belongs to `session_id`; NotFound otherwise."""
    session_id = check_session_id(session_id)
    turn_id = check_turn_id(turn_id)
    doc = db[settings.interactions_collection].find_one({"_id": turn_id, "session_id": session_id}, {"_id": 0})
    if doc is None:
        raise NotFound("turn not found", code="turn_not_found")
    return Turn(**doc)


def recent_turns(
    db: Database, settings: Settings, session_id: str, limit: int, *, exclude_turn_id: str | None = None
) -> list[dict]:
    """The session's last `limit` turns, oldest first (dialog context, history endpoint)."""
    session_id = check_session_id(session_id)
    if limit <= 0:
        return []
    query: dict[str, Any] = {"session_id": session_id}
    if exclude_turn_id is not None:
        query["_id"] = {"$ne": check_turn_id(exclude_turn_id)}
    cursor = (
        db[settings.interactions_collection]
        .find(query, {"_id": 0})
        .sort([("timestamp", DESCENDING), ("_id", DESCENDING)])
        .limit(int(limit))
    )
    return list(reversed(list(cursor)))


def session_has_audio(db: Database, settings: Settings, session_id: str, audio_id: str) -> bool:
    """Whether one of the session's turns spoke this audio (cached audio is shared between sessions)."""
    query = {"session_id": check_session_id(session_id), "tts.audio_ids": str(audio_id)}
    return db[settings.interactions_collection].find_one(query, {"_id": 1}) is not None
