"""Recognition task (queue `stt`, or the GPU queue when configured)."""

from __future__ import annotations

from celery import shared_task

from voiceapp import pipeline, stages

from .base import StageTask
from .celery_app import runtime


# Safe to run twice: the stage is claimed atomically; a second copy re-publishes the recorded result.
@shared_task(name="voice.stt.transcribe", base=StageTask)
def transcribe(ref: dict) -> dict:
    """Turn ref in, turn ref out; the transcript goes to MongoDB and the session's events."""
    return stages.run_stt(runtime(), ref).to_payload()


# A redelivered live utterance finds its turn recorded and hands it on at most once (continue_turn).
@shared_task(name="voice.stt.live", base=StageTask)
def live(ref: dict) -> dict | None:
    """Recognise a live utterance; when words were heard, enqueue dialog | synthesis."""
    rt = runtime()
    recognized = stages.run_live_stt(rt, ref)
    if recognized is None or recognized.skip:
        return None
    pipeline.continue_turn(rt, recognized)
    return recognized.to_payload()
