"""What one stage leaves the next through Redis, beside the MongoDB record: the uploaded utterance, the question.

The API puts the WAV here before it enqueues the turn and stores the GridFS copy after, so recognition
starts from a Redis read instead of waiting for (and polling) the slower GridFS store. GridFS stays the
record: a turn whose hand-over expired or was lost with a Redis restart is read from there.

Recognition leaves the recognised question the same way, so dialog answers while it claims the turn. The
visitor's words travel here, not in task payloads, which Flower and the worker logs show.
"""

from __future__ import annotations

import json
import logging
from typing import cast

import redis

log = logging.getLogger(__name__)

PREFIX = "voiceapp:upload"
QUESTION_PREFIX = "voiceapp:question"
# Long enough for a turn queued behind a busy recognition worker; GridFS serves anything later.
TTL_S = 300


def _key(upload_id: str) -> str:
    return f"{PREFIX}:{upload_id}"


def _set(client: redis.Redis, key: str, value: bytes | str, what: str) -> bool:
    try:
        client.set(key, value, ex=TTL_S)
    except redis.RedisError as err:
        log.warning("%s not handed over through Redis: %s", what, err)
        return False
    return True


def _take(client: redis.Redis, key: str, what: str) -> bytes | None:
    try:
        data = client.getdel(key)
    except redis.RedisError as err:
        log.warning("%s not read from Redis: %s", what, err)
        return None
    return cast(bytes | None, data)  # the runtime's client does not decode replies


def hand_over(client: redis.Redis, upload_id: str, wav: bytes) -> bool:
    """Leave the upload for the recognition stage; False (GridFS will serve it) when Redis refused."""
    return _set(client, _key(upload_id), wav, f"upload {upload_id}")


def take(client: redis.Redis, upload_id: str) -> bytes | None:
    """The handed-over upload, removed from Redis as it is read; None when there is none."""
    return _take(client, _key(upload_id), f"upload {upload_id}")


def hand_over_question(client: redis.Redis, turn_id: str, project: str, transcript: str) -> bool:
    """Leave turn `turn_id`'s recognised question for the dialog stage; False when Redis refused (it reads the turn)."""
    return _set(
        client, f"{QUESTION_PREFIX}:{turn_id}", json.dumps([project, transcript]), f"question of turn {turn_id}"
    )


def take_question(client: redis.Redis, turn_id: str) -> tuple[str, str] | None:
    """(project, transcript) handed over for turn `turn_id`, removed as it is read; None when there is none."""
    data = _take(client, f"{QUESTION_PREFIX}:{turn_id}", f"question of turn {turn_id}")
    try:
        project, transcript = json.loads(data) if data else (None, None)
    except (ValueError, TypeError):
        return None
    return (project, transcript) if isinstance(project, str) and isinstance(transcript, str) and transcript else None
