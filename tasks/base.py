"""What every stage task shares: late acks, retries with backoff on outages, one clear error when it gives up."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from celery import Task
from pymongo.errors import ConnectionFailure

from voiceapp.errors import StorageUnavailable, VoiceError

log = logging.getLogger(__name__)

# Outages that end by themselves (MongoDB or Redis restarting): retry, never fail the turn at once.
TRANSIENT = (StorageUnavailable, ConnectionFailure, redis.ConnectionError, redis.TimeoutError)


class StageTask(Task):
    """A stage of a turn: a worker killed mid-stage hands it back (stages claim their turn, so it runs once)."""

    acks_late = True
    reject_on_worker_lost = True
    autoretry_for = TRANSIENT
    retry_backoff = 1
    retry_backoff_max = 20
    retry_jitter = False
    max_retries = 10  # about two minutes of outage

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the stage while keeping its message leased (a live utterance may outlast the visibility timeout)."""
        stop = _keep_leased(self.request.id)
        try:
            return super().__call__(*args, **kwargs)
        finally:
            if stop is not None:
                stop.set()

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        """The stage gave up: fail the turn through the stages' one failure path (a VoiceError already did)."""
        if isinstance(exc, VoiceError) and not isinstance(exc, StorageUnavailable):
            return
        payload = args[0] if args and isinstance(args[0], dict) else {}
        if not payload.get("session_id") or not payload.get("turn_id"):
            return
        from voiceapp.stages import fail_turn
        from voiceapp.turns import TurnRef

        from .celery_app import runtime

        stage = self.name.split(".")[1] if self.name.count(".") >= 2 else self.name
        outage = isinstance(exc, TRANSIENT)
        code = "storage_unavailable" if outage else "internal_error"
        message = (
            f"the {stage} stage could not reach its storage after {self.max_retries} retries; try again"
            if outage
            else f"the {stage} stage failed unexpectedly; try again"
        )
        log.error("turn %s failed in %s: %s", payload["turn_id"], stage, type(exc).__name__)
        fail_turn(runtime(), TurnRef.of(payload), stage, code, message)


UNACKED_INDEX = "unacked_index"  # kombu's Redis transport: delivery tag -> when it was handed out


def _delivery_tag(task_id: str | None) -> str | None:
    """The broker delivery tag of the running task (solo and thread pools run it in the consumer process)."""
    from celery.worker import state

    for request in list(state.active_requests):
        if request.id == task_id and request.message is not None:
            return request.message.delivery_tag
    return None


def _keep_leased(task_id: str | None) -> threading.Event | None:
    """Refresh the task's unacked timestamp until the returned event is set, so no sweep redelivers it.

    A task whose worker dies stops refreshing and comes back after VOICE_TASK_VISIBILITY_TIMEOUT.
    """
    tag = _delivery_tag(task_id)
    if tag is None:  # called directly, eagerly, or in a prefork child: nothing to refresh
        return None
    from .celery_app import runtime

    rt = runtime()
    every = max(0.5, rt.settings.task_visibility_timeout / 3)
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(every):
            try:
                rt.redis.zadd(UNACKED_INDEX, {tag: time.time()}, xx=True)
            except redis.RedisError as err:  # the broker is restarting: its unacked list is gone anyway
                log.debug("could not refresh the lease of task %s: %s", task_id, err)

    threading.Thread(target=run, name=f"lease-{task_id}", daemon=True).start()
    return stop
