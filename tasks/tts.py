"""Synthesis task (queue `tts`)."""

from __future__ import annotations

from celery import shared_task

from voiceapp import speculative, stages

from .base import StageTask
from .celery_app import runtime


@shared_task(name="voice.tts.synthesize", base=StageTask)
def synthesize(ref: dict) -> dict:
    """Turn ref in, turn ref out; the audio goes to GridFS and its URL to the session's events."""
    return stages.run_tts(runtime(), ref).to_payload()


@shared_task(name=speculative.PREPARE_TTS_TASK, ignore_result=True)
def prepare(payload: dict) -> None:
    """A prepared reply in; its first sentence spoken into the audio cache, nothing published."""
    speculative.prepare_speech(runtime(), payload)
