"""Starting a turn: store the audio, record the turn, enqueue stt | dialog | tts by task name."""

from __future__ import annotations

import time
from typing import Any

from celery import chain

from .audio import to_wav
from .events import EventType
from .heartbeats import workers_per_queue
from .models import DecodedAudio
from .queues import stt_route
from .runtime import Runtime
from .storage import interactions
from .storage.audio import UPLOADS_BUCKET, put_audio

STAGE_TASKS = ("voice.stt.transcribe", "voice.dialog.respond", "voice.tts.synthesize")
LIVE_STT_TASK = "voice.stt.live"


def start_turn(rt: Runtime, session: dict[str, Any], audio: DecodedAudio, source: str = "http") -> str:
    """Accept one utterance of a session; returns the turn id. Audio travels by GridFS id only."""
    accepted_at = time.time()
    upload_id = put_audio(
        rt.db,
        to_wav(audio.samples, audio.sample_rate),
        bucket=UPLOADS_BUCKET,
        filename="utterance.wav",
        content_type="audio/wav",
        metadata={"session_id": session["session_id"], "source": source},
    )
    # The turn carries what its stages need, so they never depend on the session still being open.
    turn_id = interactions.create_turn(
        rt.db,
        rt.settings,
        session,
        upload_id,
        accepted_at=accepted_at,
        source=source,
        audio_seconds=round(audio.duration, 3),
        tts_provider=session.get("tts_provider"),
    )
    ref = {"session_id": session["session_id"], "turn_id": turn_id}
    rt.events.publish(session["session_id"], EventType.STATUS, turn_id, status="thinking")
    _enqueue(rt, STAGE_TASKS, ref)
    return turn_id


def _stt_queue(rt: Runtime) -> str:
    return stt_route(rt.settings, lambda queue: workers_per_queue(rt.redis, (queue,))[queue])


def _enqueue(rt: Runtime, names: tuple[str, ...], ref: dict[str, Any]) -> None:
    first = {"queue": _stt_queue(rt)} if names[0].startswith("voice.stt.") else {}
    signatures = [rt.celery.signature(names[0], args=(ref,), options=first)]
    signatures += [rt.celery.signature(n) for n in names[1:]]
    chain(*signatures).apply_async()


def start_live_utterance(rt: Runtime, session_id: str, utterance_id: str, mode: str) -> None:
    """Hand a live utterance (frames arriving in Redis) to an STT worker; it becomes turn `utterance_id`."""
    rt.events.publish(session_id, EventType.STATUS, utterance_id, status="listening", mode=mode)
    rt.celery.send_task(
        LIVE_STT_TASK, args=({"session_id": session_id, "turn_id": utterance_id, "mode": mode},), queue=_stt_queue(rt)
    )


def continue_turn(rt: Runtime, ref: dict[str, Any]) -> None:
    """After live recognition: enqueue dialog | synthesis for the recognised turn."""
    _enqueue(rt, STAGE_TASKS[1:], ref)


def start_text_turn(rt: Runtime, session: dict[str, Any], text: str, source: str = "text") -> str:
    """Accept one typed question: record it already recognised, then enqueue dialog | synthesis."""
    accepted_at = time.time()
    turn_id = interactions.create_turn(
        rt.db,
        rt.settings,
        session,
        None,  # nothing was uploaded: the text is the transcript
        accepted_at=accepted_at,
        stage_done_at=accepted_at,
        source=source,
        status="recognized",
        transcript=text,
        stt={"engine": "text", "model": None, "language": session.get("language"), "confidence": 1.0},
        tts_provider=session.get("tts_provider"),
    )
    sid = session["session_id"]
    rt.events.publish(sid, EventType.STATUS, turn_id, status="thinking")
    # Same event as a recognised utterance, so clients show a typed question like a spoken one.
    rt.events.publish(sid, EventType.TRANSCRIPT, turn_id, text=text, final=True, confidence=1.0, engine="text")
    continue_turn(rt, {"session_id": sid, "turn_id": turn_id})
    return turn_id
