"""What every stage task shares: late acks, retries with backoff on outages, one clear error when it gives up."""
from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Task
from pymongo.errors import ConnectionFailure

from voiceapp.errors import StorageUnavailable, VoiceError

log = logging.getLogger(__name__)

# Outages that end by themselves (MongoDB or Redis restarting): retry, never fail the turn at once.
TRANSIENT = (StorageUnavailable, ConnectionFailure, redis.ConnectionError, redis.TimeoutError)


class StageTask(Task):
    """A stage of a turn: a worker killed mid-stage hands it back (stages skip work already recorded)."""

    acks_late = True
    reject_on_worker_lost = True
    autoretry_for = TRANSIENT
    retry_backoff = 1
    retry_backoff_max = 20
    retry_jitter = False
    max_retries = 10  # about two minutes of outage

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        """The stage gave up: fail the turn with an error event (a stage's own VoiceError already did)."""
        if isinstance(exc, VoiceError) and not isinstance(exc, StorageUnavailable):
            return
        ref = args[0] if args and isinstance(args[0], dict) else {}
        if not ref.get("session_id") or not ref.get("turn_id"):
            return
        from voiceapp.events import EventType
        from voiceapp.storage import interactions

        from .celery_app import runtime

        rt = runtime()
        stage = self.name.split(".")[1] if self.name.count(".") >= 2 else self.name
        outage = isinstance(exc, TRANSIENT)
        code = "storage_unavailable" if outage else "internal_error"
        message = (f"the {stage} stage could not reach its storage after {self.max_retries} retries; try again"
                   if outage else f"the {stage} stage failed unexpectedly; try again")
        log.error("turn %s failed in %s: %s", ref["turn_id"], stage, type(exc).__name__)
        try:
            interactions.update_turn(rt.db, rt.settings, ref["turn_id"], status="error",
                                     error={"stage": stage, "code": code, "message": message})
        except Exception as err:  # MongoDB may be what is down: the event still tells the client
            log.warning("could not record the failure of turn %s: %s", ref["turn_id"], type(err).__name__)
        try:
            rt.events.publish(ref["session_id"], EventType.ERROR, ref["turn_id"], stage=stage, code=code,
                              message=message)
        except redis.RedisError as err:
            log.warning("could not publish the failure of turn %s: %s", ref["turn_id"], err)
