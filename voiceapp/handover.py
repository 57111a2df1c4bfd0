"""An uploaded utterance handed from the API to recognition through Redis, beside its GridFS record.

The API puts the WAV here before it enqueues the turn and stores the GridFS copy after, so recognition
starts from a Redis read instead of waiting for (and polling) the slower GridFS store. GridFS stays the
record: a turn whose hand-over expired or was lost with a Redis restart is read from there.
"""

from __future__ import annotations

import logging
from typing import cast

import redis

log = logging.getLogger(__name__)

PREFIX = "voiceapp:upload"
# Long enough for a turn queued behind a busy recognition worker; GridFS serves anything later.
TTL_S = 300


def _key(upload_id: str) -> str:
    return f"{PREFIX}:{upload_id}"


def hand_over(client: redis.Redis, upload_id: str, wav: bytes) -> bool:
    """Leave the upload for the recognition stage; False (GridFS will serve it) when Redis refused."""
    try:
        client.set(_key(upload_id), wav, ex=TTL_S)
    except redis.RedisError as err:
        log.warning("upload %s not handed over through Redis: %s", upload_id, err)
        return False
    return True


def take(client: redis.Redis, upload_id: str) -> bytes | None:
    """The handed-over upload, removed from Redis as it is read; None when there is none."""
    try:
        data = client.getdel(_key(upload_id))
    except redis.RedisError as err:
        log.warning("upload %s not read from Redis: %s", upload_id, err)
        return None
    return cast(bytes | None, data)  # the runtime's client does not decode replies
