"""Celery built from Settings: per-stage queues, routes by task name, redelivery, and the process Runtime.

The runtime side owns Celery (the API enqueues by task name with it); `tasks/` only defines the tasks
and the worker entry, which builds its app here with the task modules included.
"""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery
from kombu import Queue

from .config import Settings
from .queues import all_queues
from .runtime import Runtime


def _broker_options(settings: Settings) -> dict:
    """Redelivery of tasks whose worker died: after the visibility timeout, found by a periodic sweep."""
    timeout = settings.task_visibility_timeout
    # kombu sweeps every interval x throttle seconds (100 s by default): scale it to the timeout.
    return {
        "visibility_timeout": timeout,
        "unacked_restore_interval": max(1, min(10, timeout // 5)),
        "unacked_restore_throttle": 1,
    }


def create_celery(settings: Settings, include: Sequence[str] = ()) -> Celery:
    """A Celery app talking to settings.redis_url, with one queue per stage (`include`: task modules of a worker)."""
    app = Celery("voiceapp", broker=settings.redis_url, backend=settings.redis_url, include=list(include))
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
        # One result backend per process: by default Celery builds one per thread, and under the API's gevent
        # workers every request is a greenlet, so each enqueue built a backend (and a Redis pool) anew.
        result_backend_thread_safe=True,
        # Nothing reads a stage's result from the backend: a chain hands it to the next task in the message,
        # the turn document is the record and Flower learns states from the task events. Storing it (and a
        # STARTED state) cost four Redis writes per stage on the turn's path and kept three keys per turn.
        task_ignore_result=True,
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
