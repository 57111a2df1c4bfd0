"""Recognition task (queue `stt`, or the GPU queue when configured)."""
from __future__ import annotations

from celery import shared_task

from voiceapp import pipeline, stages
from voiceapp.errors import StorageUnavailable

from .celery_app import runtime


# Safe to run twice: the stage skips work already recorded on the turn.
@shared_task(name="voice.stt.transcribe", acks_late=True, reject_on_worker_lost=True,
             autoretry_for=(StorageUnavailable,), retry_backoff=True, retry_backoff_max=30, max_retries=8)
def transcribe(ref: dict) -> dict:
    """Turn ref in, turn ref out; the transcript goes to MongoDB and the session's events."""
    return stages.run_stt(runtime(), ref)


# A redelivered live utterance re-reads its stream from the start; a recorded turn is not recorded twice.
@shared_task(name="voice.stt.live", acks_late=True, reject_on_worker_lost=True,
             autoretry_for=(StorageUnavailable,), retry_backoff=True, retry_backoff_max=30, max_retries=8)
def live(ref: dict) -> dict | None:
    """Recognise a live utterance; when words were heard, enqueue dialog | synthesis."""
    rt = runtime()
    recognized = stages.run_live_stt(rt, ref)
    if recognized is not None:
        pipeline.continue_turn(rt, recognized)
    return recognized
