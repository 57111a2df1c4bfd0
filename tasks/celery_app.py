"""Celery built from Settings: per-stage queues, routes by task name, the process Runtime."""

from __future__ import annotations

import logging

from celery import Celery, current_app
from kombu import Queue
from redis.exceptions import RedisError

from voiceapp.config import Settings
from voiceapp.queues import all_queues
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

    call.voiceapp_safe = True
    return call


def _broker_options(settings: Settings) -> dict:
    """Redelivery of tasks whose worker died: after the visibility timeout, found by a periodic sweep."""
    timeout = settings.task_visibility_timeout
    # kombu sweeps every interval x throttle seconds (100 s by default): scale it to the timeout.
    return {
        "visibility_timeout": timeout,
        "unacked_restore_interval": max(1, min(10, timeout // 5)),
        "unacked_restore_throttle": 1,
    }


def create_celery(settings: Settings) -> Celery:
    """A Celery app talking to settings.redis_url, with one queue per stage."""
    _survive_broker_loss()
    app = Celery("voiceapp", broker=settings.redis_url, backend=settings.redis_url, include=list(TASK_MODULES))
    app.conf.update(
        task_queues=[Queue(name) for name in all_queues(settings)],
        task_default_queue="dialog",
        task_routes={
            # The API may override this per turn (voiceapp.queues.stt_route) to reach GPU workers.
            "voice.stt.*": {"queue": "stt"},
            "voice.dialog.*": {"queue": "dialog"},
            "voice.tts.*": {"queue": "tts"},
        },
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=settings.session_timeout,
        task_track_started=True,
        task_send_sent_event=True,
        worker_send_task_events=True,
        worker_prefetch_multiplier=1,
        # Threads: a live utterance mostly waits for audio, so one process serves several visitors at
        # once and keeps one copy of each model; ctranslate2 and onnxruntime release the GIL.
        worker_pool=settings.worker_pool,
        worker_concurrency=settings.worker_concurrency,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options=_broker_options(settings),
        result_backend_transport_options={"retry_policy": {"timeout": 5.0}},
    )
    app.voiceapp_runtime = Runtime(settings, celery=app)
    return app


def runtime() -> Runtime:
    """The Runtime of the Celery app this process serves."""
    return current_app.voiceapp_runtime
