"""Queue names of the three stages, and where recognition goes when GPU workers are configured."""

from __future__ import annotations

from collections.abc import Callable

from .config import Settings

STAGE_QUEUES = ("stt", "dialog", "tts")


def all_queues(settings: Settings) -> tuple[str, ...]:
    """Every queue of this deployment: the three stages, plus the GPU recognition queue when configured."""
    return STAGE_QUEUES + ((settings.stt_gpu_queue,) if settings.stt_gpu_queue else ())


def stt_route(settings: Settings, live_workers: Callable[[str], int]) -> str:
    """The GPU queue while a GPU worker is alive (STT_GPU_QUEUE set), else the CPU `stt` queue."""
    if settings.stt_gpu_queue and live_workers(settings.stt_gpu_queue) > 0:
        return settings.stt_gpu_queue
    return "stt"
