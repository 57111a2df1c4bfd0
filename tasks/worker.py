"""Worker entry module: `celery -A tasks.worker worker -Q stt|dialog|tts`."""

from __future__ import annotations

import logging

from celery.signals import celeryd_after_setup, worker_process_init, worker_ready

from voiceapp.config import Settings
from voiceapp.errors import VoiceError
from voiceapp.heartbeats import start_beating
from voiceapp.logs import configure_logging

from .celery_app import create_celery
from .recovery import start_watching

settings = Settings.from_env()
configure_logging(settings)
celery = create_celery(settings)
log = logging.getLogger("voiceapp.worker")


def _warm(queue_names: set[str]) -> None:
    """Load the models of the stages this worker serves, so the first turn is not slow."""
    from voiceapp.dialog.embed import warm as warm_dialog
    from voiceapp.stt.registry import warm as warm_stt
    from voiceapp.tts.registry import warm as warm_tts

    stt = "stt" in queue_names or (settings.stt_gpu_queue and settings.stt_gpu_queue in queue_names)
    wanted_warm = ((stt, warm_stt), ("tts" in queue_names, warm_tts), ("dialog" in queue_names, warm_dialog))
    for wanted, warm in wanted_warm:
        if not wanted:
            continue
        try:
            warm(settings)
        except VoiceError as err:
            # A bad model path must not kill the worker: each turn then gets a clear error event.
            log.error("could not load a model at start: %s (%s)", err.message, err.code)
    log.info("worker warmed for queues %s", ",".join(sorted(queue_names)))


@celeryd_after_setup.connect
def _after_setup(sender, instance, **_kwargs) -> None:
    names = set(instance.app.amqp.queues.consume_from or instance.app.amqp.queues)
    instance.app.voiceapp_queues = names
    if "prefork" not in str(instance.pool_cls).lower():
        _warm(names)


@worker_process_init.connect
def _process_init(**_kwargs) -> None:
    _warm(getattr(celery, "voiceapp_queues", set()))


from voiceapp.worker_metrics import on_worker_setup  # noqa: E402  (Prometheus endpoint when WORKER_METRICS_PORT is set)

celeryd_after_setup.connect(on_worker_setup, weak=False)


@worker_ready.connect
def _ready(sender, **_kwargs) -> None:
    # /readyz counts these: a queue with no live worker makes the deployment not ready.
    start_beating(celery.voiceapp_runtime.redis, sender.hostname, getattr(celery, "voiceapp_queues", set()))
    # A Redis restart loses queued tasks: whichever worker notices first re-enqueues unfinished turns.
    start_watching(celery.voiceapp_runtime)
