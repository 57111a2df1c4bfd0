"""Barge-in: a visitor who speaks over the reply stops its synthesis; what they heard is recorded."""

from __future__ import annotations

import json
import time
from typing import Any

from .runtime import Runtime


def _interrupt_key(session_id: str) -> str:
    return f"voiceapp:interrupt:{session_id}"


def interrupt(rt: Runtime, session_id: str, turn_id: str | None, played_chunks: int | None = None) -> None:
    """Barge-in: ask the session's in-flight synthesis to stop; remembers what the client played."""
    value = json.dumps({"turn_id": turn_id, "played_chunks": played_chunks, "at": time.time()})
    rt.redis.set(_interrupt_key(session_id), value, ex=300)


def interruption(rt: Runtime, session_id: str, turn_id: str, accepted_at: float | None) -> dict[str, Any] | None:
    """The barge-in request that applies to this turn: named for it, or unnamed and sent after it began."""
    raw = rt.redis.get(_interrupt_key(session_id))
    if not raw:
        return None
    request = json.loads(raw)
    if request.get("turn_id") == turn_id:
        return request
    if request.get("turn_id") is None and request.get("at", 0) >= float(accepted_at or 0):
        return request
    return None
