"""Recognition task (queue `stt`, or the GPU queue when configured)."""

from __future__ import annotations

from celery import shared_task

from voiceapp import pipeline, stages
from voiceapp.errors import NotFound
from voiceapp.storage import interactions

from .base import StageTask
from .celery_app import runtime


# Safe to run twice: the stage skips work already recorded on the turn.
@shared_task(name="voice.stt.transcribe", base=StageTask)
def transcribe(ref: dict) -> dict:
    """Turn ref in, turn ref out; the transcript goes to MongoDB and the session's events."""
    return stages.run_stt(runtime(), ref)


# A redelivered live utterance re-reads its stream from the start; a recorded turn is not recorded twice.
@shared_task(name="voice.stt.live", base=StageTask)
def live(ref: dict) -> dict | None:
    """Recognise a live utterance; when words were heard, enqueue dialog | synthesis."""
    rt = runtime()
    try:
        turn = interactions.get_turn(rt.db, rt.settings, ref["session_id"], ref["turn_id"])
    except NotFound:
        turn = None
    if turn is not None:
        # Redelivered after the utterance was recorded (its audio is gone): only make sure the chain went on.
        if turn.get("status") == "recognized":
            pipeline.continue_turn(rt, ref)
        return ref
    recognized = stages.run_live_stt(rt, ref)
    if recognized is not None:
        pipeline.continue_turn(rt, recognized)
    return recognized
