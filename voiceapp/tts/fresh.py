"""New reply audio kept in Redis for the moment between its chunk's event and its GridFS record.

A chunk's `audio` event goes out once its audio is in Redis; the GridFS store (the record, and the shared TTS
cache) runs meanwhile, off the path of the first audio. The reply is done only when every store has landed,
and each Redis copy is dropped once its store has. The audio endpoint reads Redis first, then GridFS, so a client
that fetches the URL the moment the event arrives finds the audio either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import redis

log = logging.getLogger(__name__)

PREFIX = "voiceapp:fresh-audio"
# A store takes milliseconds; the copy outlives a stalled one (a stage whose store failed retries with new ids).
TTL_S = 300
_STORES = ThreadPoolExecutor(max_workers=4, thread_name_prefix="tts-store")


@dataclass(frozen=True)
class NewAudio:
    """A chunk's newly synthesized audio and the GridFS store that records it (calling it stores it)."""

    audio_id: str
    data: bytes
    mime_type: str
    session_id: str
    store: Callable[[], object]

    def __call__(self) -> object:
        return self.store()


def _key(audio_id: str) -> str:
    return f"{PREFIX}:{audio_id}"


def keep(client: redis.Redis, audio: NewAudio) -> bool:
    """Put the audio where the endpoint finds it before GridFS does; False (store it first) when Redis refused."""
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hset(
            _key(audio.audio_id), mapping={"data": audio.data, "mime": audio.mime_type, "session": audio.session_id}
        )
        pipe.expire(_key(audio.audio_id), TTL_S)
        pipe.execute()
    except redis.RedisError as err:
        log.warning("audio %s not kept in Redis: %s", audio.audio_id, err)
        return False
    return True


def read(client: redis.Redis, audio_id: str) -> tuple[bytes, str, str] | None:
    """(bytes, mime type, session id) of audio whose GridFS store has not landed yet; None otherwise."""
    try:
        data, mime, session = client.hmget(_key(audio_id), ["data", "mime", "session"])
    except redis.RedisError as err:
        log.warning("audio %s not read from Redis: %s", audio_id, err)
        return None
    if not isinstance(data, bytes) or mime is None or session is None:
        return None  # the runtime's client does not decode replies: audio comes back as bytes
    return data, _text(mime), _text(session)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _record(client: redis.Redis, audio: NewAudio) -> None:
    audio.store()
    try:
        client.delete(_key(audio.audio_id))
    except redis.RedisError as err:  # the copy expires by itself
        log.debug("audio %s: Redis copy not dropped: %s", audio.audio_id, err)


class Storing:
    """The stores of one reply's new audio: each chunk fetchable at once, its GridFS record written behind."""

    def __init__(self, client: redis.Redis | None) -> None:
        self._client = client
        self._pending: list[Future[None]] = []

    def start(self, store: Callable[[], object]) -> None:
        """Make a chunk's audio fetchable now: kept in Redis with its store in the background, else stored."""
        if self._client is None or not isinstance(store, NewAudio) or not keep(self._client, store):
            store()
            return
        self._pending.append(_STORES.submit(_record, self._client, store))

    def wait(self) -> None:
        """Wait for every store started; re-raise the first failure (a reply is not done before its record)."""
        pending, self._pending = self._pending, []
        errors = [err for future in pending if (err := future.exception()) is not None]
        if errors:
            raise errors[0]

    def settle(self) -> None:
        """`wait`, for a reply that already failed or was interrupted: a store's failure is only logged."""
        try:
            self.wait()
        except Exception as err:  # noqa: BLE001 - the reply's own failure is what propagates
            log.warning("a chunk's audio was not stored: %s", err)
