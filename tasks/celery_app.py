"""The worker's Celery app (built by voiceapp.broker from Settings), its kombu patches, and the process Runtime."""

from __future__ import annotations

import logging

from celery import Celery, current_app
from redis.exceptions import RedisError

from voiceapp import broker
from voiceapp.config import Settings
from voiceapp.runtime import Runtime

TASK_MODULES = ("tasks.stt", "tasks.dialog", "tasks.tts")
log = logging.getLogger(__name__)


def _survive_broker_loss() -> None:
    """Keep a worker alive when Redis vanishes while it holds a task (kombu bug, e.g. celery/kombu#582).

    After the connection is lost, restoring, acking or rejecting a message of the dead channel goes
    through a connection that is already gone and raises AttributeError, which kills the worker
    ("Unrecoverable error"). Those messages stay in Redis' unacked set (the visibility sweep hands
    them out again; stages skip recorded work) or were lost with a restarted Redis (tasks.recovery
    re-enqueues their turns): skipping the call is safe.
    """
    from kombu.transport import redis as kombu_redis

    for name in ("restore_unacked", "ack", "reject"):
        original = getattr(kombu_redis.QoS, name)
        if not getattr(original, "voiceapp_safe", False):
            setattr(kombu_redis.QoS, name, _tolerant(name, original))


def _tolerant(name: str, original):
    def call(self, *args, **kwargs):
        try:
            return original(self, *args, **kwargs)
        except (AttributeError, OSError, RedisError) as err:
            log.warning("broker connection lost: %s skipped (%r)", name, err)
            return None

    setattr(call, "voiceapp_safe", True)  # noqa: B010  (a marker attribute on a function: mypy has no place for it)
    return call


def create_celery(settings: Settings) -> Celery:
    """The worker's Celery app: the runtime's, with the stage tasks included and kombu made crash-tolerant."""
    _survive_broker_loss()
    return broker.create_celery(settings, include=TASK_MODULES)


def runtime() -> Runtime:
    """The Runtime of the Celery app this process serves."""
    return current_app.voiceapp_runtime
