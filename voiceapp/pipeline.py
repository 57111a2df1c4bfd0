"""Starting a turn: store the audio, record the turn, enqueue stt | dialog | tts by task name."""
from __future__ import annotations

import time
from typing import Any

from celery import chain

from .audio import to_wav
from .events import EventType
from .models import DecodedAudio
from .runtime import Runtime
from .storage import interactions
from .storage.audio import UPLOADS_BUCKET, put_audio

STAGE_TASKS = ("voice.stt.transcribe", "voice.dialog.respond", "voice.tts.synthesize")


def start_turn(rt: Runtime, session: dict[str, Any], audio: DecodedAudio, source: str = "http") -> str:
    """Accept one utterance of a session; returns the turn id. Audio travels by GridFS id only."""
    accepted_at = time.time()
    upload_id = put_audio(rt.db, to_wav(audio.samples, audio.sample_rate), bucket=UPLOADS_BUCKET,
                          filename="utterance.wav", content_type="audio/wav",
                          metadata={"session_id": session["session_id"], "source": source})
    # The turn carries what its stages need, so they never depend on the session still being open.
    turn_id = interactions.create_turn(
        rt.db, rt.settings, session, upload_id, accepted_at=accepted_at, source=source,
        audio_seconds=round(audio.duration, 3), language=session.get("language"), voice=session.get("voice"),
        tts_provider=session.get("tts_provider"))
    ref = {"session_id": session["session_id"], "turn_id": turn_id}
    rt.events.publish(session["session_id"], EventType.STATUS, turn_id, status="thinking")
    signatures = [rt.celery.signature(STAGE_TASKS[0], args=(ref,))]
    signatures += [rt.celery.signature(name) for name in STAGE_TASKS[1:]]
    chain(*signatures).apply_async()
    return turn_id
