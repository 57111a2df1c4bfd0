"""After the broker lost its queues (Redis restarted without persistence), put unfinished turns back on them.

A marker key lives in Redis as long as its data does. When a worker finds it missing, the broker
is new: the first worker to set it again re-enqueues every recent turn MongoDB shows unfinished,
from the stage it stopped at. Stages are claimed atomically, so a turn also still queued
somewhere runs each stage once.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

import redis

from voiceapp import pipeline
from voiceapp.runtime import Runtime
from voiceapp.storage.sessions import utcnow
from voiceapp.turns import STAGES, TurnRef, remaining_stages

log = logging.getLogger(__name__)

MARKER = "voiceapp:broker:epoch"
# Every unfinished status (ready or running) of a stage; remaining_stages says what is still to run.
UNFINISHED = [status.value for stage in STAGES for status in (stage.ready, stage.running)]


def recover_lost_turns(rt: Runtime) -> int:
    """Re-enqueue recent unfinished turns when the broker is new; returns how many."""
    if not rt.redis.set(MARKER, utcnow().isoformat(), nx=True):
        return 0
    try:
        since = utcnow() - timedelta(seconds=rt.settings.session_timeout)
        turns = list(
            rt.db[rt.settings.interactions_collection].find(
                {"status": {"$in": UNFINISHED}, "updated_at": {"$gt": since}},
                {"_id": 0, "session_id": 1, "turn_id": 1, "status": 1},
            )
        )
        for turn in turns:
            ref = TurnRef(session_id=turn["session_id"], turn_id=turn["turn_id"])
            pipeline.enqueue_stages(rt, remaining_stages(turn["status"]), ref)
    except Exception:
        rt.redis.delete(MARKER)  # try again on the next check
        raise
    if turns:
        log.warning("broker was restarted: re-enqueued %d unfinished turns", len(turns))
    return len(turns)


def start_watching(rt: Runtime, interval: float = 2.0) -> threading.Event:
    """Check for a new broker every `interval` seconds in a daemon thread until the returned event is set."""
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                recover_lost_turns(rt)
            except redis.RedisError:
                pass  # Redis restarting: the next check sees the new one
            except Exception as err:  # noqa: BLE001  (MongoDB down: the marker was removed, the next check retries)
                log.warning("turn recovery failed: %s", type(err).__name__)
            stop.wait(interval)

    threading.Thread(target=run, name="voiceapp-recovery", daemon=True).start()
    return stop
