"""Dialog task (queue `dialog`)."""

from __future__ import annotations

from celery import shared_task

from voiceapp import stages

from .base import StageTask
from .celery_app import runtime


@shared_task(name="voice.dialog.respond", base=StageTask)
def respond(ref: dict) -> dict:
    """Turn ref in, turn ref out; the reply goes to MongoDB and the session's events."""
    return stages.run_dialog(runtime(), ref).to_payload()
