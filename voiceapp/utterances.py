"""Live utterances: PCM16 frames the front appends to a Redis stream and one STT task consumes.

The stream is the utterance's audio "by reference": the task gets only its id. The consumer closes
the stream when it decides the utterance has ended (voice activity) or sees the client's end
marker; appends after that are refused, and the front starts a new utterance.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from .errors import VoiceError

PREFIX = "voiceapp:utt"
HANDS_FREE, PUSH_TO_TALK = "hands_free", "push_to_talk"
# Seconds a discarded utterance's audio stays in Redis (long enough for its STT task to read the abort).
ABORTED_TTL_S = 60
MODES = (HANDS_FREE, PUSH_TO_TALK)

# Append only while open, so no frame is lost into a stream nobody reads any more. ARGV[4] = "1"
# when the stream must already exist (not the first frame): if it does not, Redis lost it (-1).
_APPEND_LUA = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
redis.call('XADD', KEYS[1], '*', ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


class UtteranceLost(VoiceError):
    """Redis lost the utterance's audio (it restarted mid-utterance): the client must say it again."""

    code, status = "utterance_lost", 503

    def __init__(
        self,
        message: str = "the audio of this utterance was lost (the server restarted a component); please say it again",
        code: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message, code, status)


# Close only a stream Redis still has: after a Redis restart the consumer must not mark a new,
# empty utterance closed (the client's next frames are then refused as lost, not silently restarted).
_CLOSE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('SET', KEYS[2], '1', 'EX', ARGV[1])
end
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
        self._close = client.register_script(_CLOSE_LUA)

    def _add(self, field: str, value: bytes, continuing: bool) -> bool:
        added = int(
            self._append(
                keys=[self._audio_key, self._closed_key], args=[field, value, self._ttl, "1" if continuing else "0"]
            )
        )
        if added < 0:
            raise UtteranceLost()
        return added == 1

    def append(self, pcm: bytes, continuing: bool = False) -> bool:
        """Add frames; False when the consumer has already closed this utterance.

        With `continuing` (frames were added before), UtteranceLost when Redis no longer has them.
        """
        return self._add("a", pcm, continuing)

    def end(self, continuing: bool = False) -> bool:
        """Mark the client's explicit end of the utterance; False when already closed (see append)."""
        return self._add("end", b"1", continuing)

    def abort(self) -> None:
        """Discard the utterance (it broke a limit): the consumer stops without a turn."""
        # A short TTL: the discarded audio must not sit in Redis for AUDIO_MAX_DURATION + 10 minutes.
        self._append(keys=[self._audio_key, self._closed_key], args=["abort", b"1", ABORTED_TTL_S])
        self.close()

    def close(self) -> None:
        """No more frames for this utterance (the consumer has its final transcript)."""
        self._close(keys=[self._audio_key, self._closed_key], args=[self._ttl])

    def exists(self) -> bool:
        """Whether this utterance is (or was recently) being streamed."""
        return bool(self._redis.exists(self._audio_key, self._closed_key))

    def is_closed(self) -> bool:
        """Whether the consumer has closed the utterance."""
        return bool(self._redis.exists(self._closed_key))

    def read(self, after: str = "0-0", block_ms: int = 100, count: int = 500) -> list[Chunk]:
        """Entries after `after`, waiting up to block_ms for new ones."""
        reply: Any = self._redis.xread({self._audio_key: after}, count=count, block=block_ms)  # bytes replies
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
                if last != "0-0" and not self.exists():
                    raise UtteranceLost()  # Redis restarted under this utterance
                if self.is_closed():
                    return  # read to the end of an utterance already finished (a redelivered task)
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
