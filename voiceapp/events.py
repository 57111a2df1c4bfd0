"""Turn events: a typed enum, per-session sequence numbers, Redis pub/sub plus a replay stream."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import redis

KEY_PREFIX = "voiceapp:events"

# One atomic step so that sequence order == stream order == publish order, whichever process
# publishes. KEYS[4] (optional) makes the event happen once: a redelivered task publishing it
# again gets the first one's number back and nothing is sent. Numbers travel as strings
# (Lua prints numbers above 1e14 as floats). A missing counter (session never
# opened, or a Redis restart lost it) restarts at ARGV[4], a clock value above any earlier number,
# so a client resuming with its last_seq never mistakes new events for old ones.
_PUBLISH_LUA = """
if #KEYS == 4 then
  local prior = redis.call('GET', KEYS[4])
  if prior then
    return {0, prior}
  end
end
local seq
if redis.call('EXISTS', KEYS[1]) == 0 then
  seq = ARGV[4]
  redis.call('SET', KEYS[1], seq)
else
  -- Lua numbers print as floats past 1e14: keep the digits exact.
  seq = string.format('%.0f', redis.call('INCR', KEYS[1]))
end
local payload = '{"seq":' .. seq .. ',' .. string.sub(ARGV[1], 2)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'e', payload)
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
if #KEYS == 4 then
  redis.call('SET', KEYS[4], seq, 'EX', ARGV[2])
end
redis.call('PUBLISH', KEYS[3], payload)
return {1, seq}
"""


class EventType(StrEnum):
    """What happened in a session; the wire name is the value."""

    STATUS = "status"
    TRANSCRIPT = "transcript"
    REPLY = "reply"
    AUDIO = "audio"
    DONE = "done"
    ERROR = "error"


@dataclass(frozen=True)
class Event:
    """One event of a session, as clients receive it."""

    type: EventType
    session_id: str
    seq: int = 0
    turn_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    ts: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON object sent to clients."""
        return {
            "seq": self.seq,
            "type": str(self.type),
            "session_id": self.session_id,
            "turn_id": self.turn_id,
            "ts": self.ts,
            **self.data,
        }

    @classmethod
    def from_json(cls, payload: str | bytes) -> Event:
        """Parse what `EventBus.publish` put on the wire."""
        raw = json.loads(payload)
        base = {k: raw.pop(k, None) for k in ("seq", "type", "session_id", "turn_id", "ts")}
        return cls(
            type=EventType(base["type"]),
            session_id=base["session_id"],
            seq=int(base["seq"]),
            turn_id=base["turn_id"],
            data=raw,
            ts=float(base["ts"] or 0.0),
        )


def once_key(type: EventType | str, turn_id: str | None, data: dict[str, Any]) -> str | None:
    """What makes a turn event unique (None: no such identity); a repeat of it is not published."""
    if turn_id is None:
        return None
    kind = str(type)
    if kind in ("done", "error", "reply"):
        return f"{turn_id}:{kind}"
    if kind == "audio":
        return f"{turn_id}:audio:{data.get('index', 0)}"
    if kind == "transcript":
        if data.get("final", True):
            return f"{turn_id}:transcript"
        digest = hashlib.sha1(str(data.get("text", "")).encode()).hexdigest()[:16]
        return f"{turn_id}:partial:{digest}"  # the same partial twice tells the client nothing
    return None


def clock_seq() -> int:
    """A sequence start above any number handed out before (microseconds since the epoch)."""
    return time.time_ns() // 1000


def channel(session_id: str) -> str:
    """The pub/sub channel of a session."""
    return f"{KEY_PREFIX}:{session_id}"


class EventBus:
    """Publishes session events and replays the ones a client missed."""

    def __init__(self, client: redis.Redis, retention_s: int = 3600, max_events: int = 1000) -> None:
        self._redis = client
        self._retention_s = retention_s
        self._max_events = max_events
        self._script = client.register_script(_PUBLISH_LUA)

    def publish(self, session_id: str, type: EventType, turn_id: str | None = None, **data: Any) -> Event:
        """Number the event, keep it for replay, and send it to live subscribers."""
        ts = round(time.time(), 6)
        body = {"type": str(type), "session_id": session_id, "turn_id": turn_id, "ts": ts, **data}
        keys = [f"{KEY_PREFIX}:{session_id}:seq", f"{KEY_PREFIX}:{session_id}:stream", channel(session_id)]
        once = once_key(type, turn_id, data)
        if once is not None:
            keys.append(f"{KEY_PREFIX}:{session_id}:once:{once}")
        _fresh, seq = self._script(keys=keys, args=[json.dumps(body), self._retention_s, self._max_events, clock_seq()])
        return Event(type=EventType(type), session_id=session_id, seq=int(seq), turn_id=turn_id, data=data, ts=ts)

    def open(self, session_id: str) -> None:
        """Start a new session's numbering at 1 (without this, numbering starts at the clock value)."""
        self._redis.set(f"{KEY_PREFIX}:{session_id}:seq", 0, ex=self._retention_s, nx=True)

    def replay(self, session_id: str, after_seq: int = 0) -> list[Event]:
        """Events of the session with seq > after_seq that are still kept, in order."""
        entries: Any = self._redis.xrange(f"{KEY_PREFIX}:{session_id}:stream") or []  # [(id, {field: value})]
        events = [Event.from_json(fields[b"e"] if b"e" in fields else fields["e"]) for _, fields in entries]
        return [e for e in events if e.seq > after_seq]

    def last_seq(self, session_id: str) -> int:
        """The sequence number of the newest event (0 when none)."""
        return int(self._redis.get(f"{KEY_PREFIX}:{session_id}:seq") or 0)
