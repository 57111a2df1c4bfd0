"""Live utterances: PCM16 frames the front appends to a Redis stream and one STT task consumes.

The stream is the utterance's audio "by reference": the task gets only its id. The consumer closes
the stream when it decides the utterance has ended (voice activity) or sees the client's end
marker; appends after that are refused, and the front starts a new utterance.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Iterator

import redis

PREFIX = "voiceapp:utt"
HANDS_FREE, PUSH_TO_TALK = "hands_free", "push_to_talk"
MODES = (HANDS_FREE, PUSH_TO_TALK)

# Append only while open, so no frame is lost into a stream nobody reads any more.
_APPEND_LUA = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
redis.call('XADD', KEYS[1], '*', ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


def new_id() -> str:
    """A new utterance id; it becomes the turn id once the utterance is recognised."""
    return uuid.uuid4().hex


def _keys(utterance_id: str) -> list[str]:
    return [f"{PREFIX}:{utterance_id}:audio", f"{PREFIX}:{utterance_id}:closed"]


@dataclass(frozen=True)
class Chunk:
    """One entry of the stream: audio, or the client's end marker."""

    entry_id: str
    pcm: bytes = b""
    end: bool = False
    abort: bool = False


class UtteranceStream:
    """Producer and consumer side of one utterance's audio in Redis."""

    def __init__(self, client: redis.Redis, utterance_id: str, ttl: int = 600) -> None:
        self.id = utterance_id
        self._redis = client
        self._ttl = ttl
        self._audio_key, self._closed_key = _keys(utterance_id)
        self._append = client.register_script(_APPEND_LUA)

    def append(self, pcm: bytes) -> bool:
        """Add frames; False when the consumer has already closed this utterance."""
        return bool(self._append(keys=[self._audio_key, self._closed_key], args=["a", pcm, self._ttl]))

    def end(self) -> bool:
        """Mark the client's explicit end of the utterance; False when already closed."""
        return bool(self._append(keys=[self._audio_key, self._closed_key], args=["end", b"1", self._ttl]))

    def abort(self) -> None:
        """Discard the utterance (it broke a limit): the consumer stops without a turn."""
        self._append(keys=[self._audio_key, self._closed_key], args=["abort", b"1", self._ttl])
        self.close()

    def close(self) -> None:
        """No more frames for this utterance (the consumer has its final transcript)."""
        self._redis.set(self._closed_key, b"1", ex=self._ttl)

    def exists(self) -> bool:
        """Whether this utterance is (or was recently) being streamed."""
        return bool(self._redis.exists(self._audio_key, self._closed_key))

    def is_closed(self) -> bool:
        """Whether the consumer has closed the utterance."""
        return bool(self._redis.exists(self._closed_key))

    def read(self, after: str = "0-0", block_ms: int = 100, count: int = 500) -> list[Chunk]:
        """Entries after `after`, waiting up to block_ms for new ones."""
        reply = self._redis.xread({self._audio_key: after}, count=count, block=block_ms)
        chunks: list[Chunk] = []
        for _key, entries in reply or ():
            for entry_id, fields in entries:
                entry = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                if b"end" in fields or b"abort" in fields:
                    chunks.append(Chunk(entry, end=True, abort=b"abort" in fields))
                else:
                    chunks.append(Chunk(entry, pcm=fields[b"a"]))
        return chunks

    def chunks(self, idle_timeout: float, block_ms: int = 100) -> Iterator[Chunk]:
        """Every entry in order, from the start (so a redelivered task sees it all); stops when idle."""
        last, idle = "0-0", 0.0
        while True:
            batch = self.read(last, block_ms=block_ms)
            if not batch:
                idle += block_ms / 1000
                if idle >= idle_timeout:
                    return
                continue
            idle = 0.0
            for chunk in batch:
                last = chunk.entry_id
                yield chunk

    def delete(self) -> None:
        """Drop the audio (it has been stored with the turn)."""
        self._redis.delete(self._audio_key)
