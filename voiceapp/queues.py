"""Queue names of the three stages, shared by the Celery app, admission control and readiness."""
from __future__ import annotations

from .config import Settings

STAGE_QUEUES = ("stt", "dialog", "tts")


def stt_queue(settings: Settings) -> str:
    """Recognition goes to the GPU queue when GPU workers are configured."""
    return settings.stt_gpu_queue or "stt"


def queues(settings: Settings) -> tuple[str, ...]:
    """The queues turns are routed to (the STT one may be the GPU queue)."""
    return (stt_queue(settings), "dialog", "tts")
