"""Synthesis task (queue `tts`)."""
from __future__ import annotations

from celery import shared_task

from voiceapp import stages
from voiceapp.errors import StorageUnavailable

from .celery_app import runtime


@shared_task(name="voice.tts.synthesize", acks_late=True, reject_on_worker_lost=True,
             autoretry_for=(StorageUnavailable,), retry_backoff=True, retry_backoff_max=30, max_retries=8)
def synthesize(ref: dict) -> dict:
    """Turn ref in, turn ref out; the audio goes to GridFS and its URL to the session's events."""
    return stages.run_tts(runtime(), ref)
