"""Dialog task (queue `dialog`)."""

from __future__ import annotations

from celery import shared_task

from voiceapp import speculative, stages

from .base import StageTask
from .celery_app import runtime


@shared_task(name="voice.dialog.respond", base=StageTask)
def respond(ref: dict) -> dict:
    """Turn ref in, turn ref out; the reply goes to MongoDB and the session's events."""
    return stages.run_dialog(runtime(), ref).to_payload()


# No retries and no result: a preparation that fails or comes late only means the turn synthesizes on its own.
@shared_task(name=speculative.PREPARE_DIALOG_TASK, ignore_result=True)
def prepare(payload: dict) -> None:
    """Speculative words in; their reply computed and handed to voice.tts.prepare, nothing recorded or published."""
    speculative.prepare_reply(runtime(), payload)
