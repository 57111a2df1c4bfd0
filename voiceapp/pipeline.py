"""Starting a turn: store the audio, record the turn, enqueue stt | dialog | tts by task name."""

from __future__ import annotations

import time
from typing import Any

from celery import chain

from . import handover
from .audio import to_wav
from .events import EventType
from .heartbeats import workers_per_queue
from .models import DecodedAudio
from .queues import stt_route
from .runtime import Runtime
from .storage import interactions
from .storage.audio import UPLOADS_BUCKET, new_audio_id, put_audio
from .turns import LIVE_STT_TASK, STAGES, Stage, TurnRef, TurnStatus

STAGE_TASKS = tuple(stage.task for stage in STAGES)  # kept for callers of the old name
__all__ = [
    "LIVE_STT_TASK",
    "STAGE_TASKS",
    "continue_turn",
    "enqueue_stages",
    "hand_question",
    "start_live_utterance",
    "start_text_turn",
    "start_turn",
]


def start_turn(rt: Runtime, session: dict[str, Any], audio: DecodedAudio, source: str = "http") -> str:
    """Accept one utterance of a session; returns the turn id. Audio travels by GridFS id only.

    The turn and its upload have ids reserved up front. Recognition reads the audio from a Redis hand-over put
    before the enqueue; the turn's record and the upload's GridFS record are stored after it, overlapping the
    queue hop and recognition.
    """
    accepted_at = time.time()
    upload_id, turn_id = new_audio_id(), interactions.new_turn_id()
    # Recognition starts on the hand-over while it claims the turn: the payload names the upload (an id).
    inputs = {"upload_id": upload_id, "language": session.get("language")}
    ref = TurnRef(session_id=session["session_id"], turn_id=turn_id, inputs=inputs)
    wav = to_wav(audio.samples, audio.sample_rate)
    handover.hand_over(rt.redis, upload_id, wav)
    enqueue_stages(rt, STAGES, ref)
    # Recorded after the enqueue (recognition's claim waits for it): the turn carries what its stages need, so
    # they never depend on the session still being open.
    interactions.create_turn(
        rt.db,
        rt.settings,
        session,
        upload_id,
        turn_id=turn_id,
        accepted_at=accepted_at,
        source=source,
        audio_seconds=round(audio.duration, 3),
        tts_provider=session.get("tts_provider"),
    )
    # Announced once recorded: a client that fetches the turn an event names must find it.
    rt.events.publish(session["session_id"], EventType.STATUS, turn_id, status="thinking")
    put_audio(
        rt.db,
        wav,
        bucket=UPLOADS_BUCKET,
        filename="utterance.wav",
        content_type="audio/wav",
        metadata={"session_id": session["session_id"], "source": source},
        audio_id=upload_id,
    )
    return turn_id


def _stt_queue(rt: Runtime) -> str:
    return stt_route(rt.settings, lambda queue: workers_per_queue(rt.redis, (queue,))[queue])


def enqueue_stages(rt: Runtime, stages: tuple[Stage, ...], ref: TurnRef | dict[str, Any]) -> None:
    """Enqueue `stages` of the turn as one chain, each task on its stage's queue."""
    payload = TurnRef.of(ref).to_payload()
    first = {"queue": _stt_queue(rt)} if stages[0].task.startswith("voice.stt.") else {}
    signatures = [rt.celery.signature(stages[0].task, args=(payload,), options=first)]
    signatures += [rt.celery.signature(stage.task) for stage in stages[1:]]
    chain(*signatures).apply_async()


def _enqueue(rt: Runtime, names: tuple[str, ...], ref: TurnRef | dict[str, Any]) -> None:
    """Enqueue by task names (the old interface of enqueue_stages)."""
    enqueue_stages(rt, tuple(stage for stage in STAGES if stage.task in names), ref)


def start_live_utterance(rt: Runtime, session_id: str, utterance_id: str, mode: str) -> None:
    """Hand a live utterance (frames arriving in Redis) to an STT worker; it becomes turn `utterance_id`."""
    rt.events.publish(session_id, EventType.STATUS, utterance_id, status="listening", mode=mode)
    ref = TurnRef(session_id=session_id, turn_id=utterance_id, mode=mode)
    rt.celery.send_task(LIVE_STT_TASK, args=(ref.to_payload(),), queue=_stt_queue(rt))


def hand_question(rt: Runtime, turn_id: str, project: str, transcript: str) -> None:
    """Leave the recognised question for dialog to answer while it claims the turn (never a paid LLM's call)."""
    if rt.settings.dialog_backend == "extractive":  # an LLM is never paid for a turn the stage does not hold
        handover.hand_over_question(rt.redis, turn_id, project, transcript)


def continue_turn(rt: Runtime, ref: TurnRef | dict[str, Any]) -> bool:
    """After recognition: enqueue dialog | synthesis for the recognised turn, once; False if that was done."""
    ref = TurnRef.of(ref)
    if not interactions.mark_handed_off(rt.db, rt.settings, ref.turn_id):
        return False
    try:
        enqueue_stages(rt, STAGES[1:], TurnRef(ref.session_id, ref.turn_id))
    except Exception:
        interactions.undo_handed_off(rt.db, rt.settings, ref.turn_id)  # so the redelivered task hands it on
        raise
    return True


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
        status=TurnStatus.RECOGNIZED.value,
        transcript=text,
        stt={"engine": "text", "model": None, "language": session.get("language"), "confidence": 1.0},
        tts_provider=session.get("tts_provider"),
    )
    sid = session["session_id"]
    rt.events.publish(sid, EventType.STATUS, turn_id, status="thinking")
    # Same event as a recognised utterance, so clients show a typed question like a spoken one.
    rt.events.publish(sid, EventType.TRANSCRIPT, turn_id, text=text, final=True, confidence=1.0, engine="text")
    hand_question(rt, turn_id, session["project"], text)
    continue_turn(rt, TurnRef(session_id=sid, turn_id=turn_id))
    return turn_id
