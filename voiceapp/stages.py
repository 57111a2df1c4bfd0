"""The three stages of a turn (recognition, dialog, synthesis): ids in, events out.

Each stage reads what it needs from MongoDB by id, records its result and timing on the turn's
interaction document, and publishes one event. A stage that finds its result already recorded
returns at once, so a redelivered task does no work twice and emits no duplicate event.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager, suppress
from typing import Any, Iterator

from pymongo.errors import DuplicateKeyError

from . import metrics
from .audio import decode, pcm16_to_float, to_wav
from .bargein import interruption
from .dialog.answer import respond
from .errors import NotFound, StorageUnavailable, VoiceError
from .events import EventType
from .models import Transcript
from .runtime import Runtime
from .storage import interactions, sessions
from .storage.audio import UPLOADS_BUCKET, get_audio, put_audio
from .stt.registry import transcribe_with_fallback, usable_engine
from .stt.streaming import StreamingRecognizer
from .tts.service import ChunkResult, synthesize_reply
from .urls import audio_url
from .utterances import PUSH_TO_TALK, UtteranceStream

log = logging.getLogger(__name__)

TurnRef = dict[str, Any]  # {"session_id": ..., "turn_id": ...}: all a task passes on


@contextmanager
def _stage(rt: Runtime, ref: TurnRef, name: str) -> Iterator[dict[str, float]]:
    """Time a stage; on a voice error, mark the turn failed and tell the client, then re-raise."""
    timing: dict[str, float] = {"started": time.time()}
    try:
        yield timing
    except VoiceError as err:
        if isinstance(err, StorageUnavailable):
            raise  # an outage, not a failed turn: the task retries with backoff
        log.warning("turn %s failed in %s: %s (%s)", ref["turn_id"], name, err.message, err.code)
        with suppress(NotFound):  # a live utterance has no turn document until it is recognised
            interactions.update_turn(
                rt.db,
                rt.settings,
                ref["turn_id"],
                status="error",
                error={"stage": name, "code": err.code, "message": err.message},
            )
        rt.events.publish(ref["session_id"], EventType.ERROR, ref["turn_id"], stage=name, **err.to_dict())
        raise
    timing["seconds"] = round(time.time() - timing["started"], 4)


def _turn(rt: Runtime, ref: TurnRef) -> dict[str, Any]:
    return interactions.get_turn(rt.db, rt.settings, ref["session_id"], ref["turn_id"])


def _queue_wait(turn: dict[str, Any], started: float) -> float:
    return round(max(0.0, started - float(turn.get("stage_done_at") or turn.get("accepted_at") or started)), 4)


def run_stt(rt: Runtime, ref: TurnRef) -> TurnRef:
    """Recognise the uploaded audio and publish the final transcript."""
    turn = _turn(rt, ref)
    if "transcript" in turn:
        return {**ref, "skip": turn.get("status") in {"no_speech", "error"}}
    with _stage(rt, ref, "stt") as t:
        data, _info = get_audio(rt.db, turn["upload_id"], bucket=UPLOADS_BUCKET)
        transcript = transcribe_with_fallback(rt.settings, decode(data, rt.settings), turn.get("language"))
    metrics.observe_recognition(transcript.engine, transcript.model, t["seconds"])
    text = transcript.text.strip()
    status = "recognized" if text else "no_speech"
    interactions.update_turn(
        rt.db,
        rt.settings,
        ref["turn_id"],
        status=status,
        transcript=text,
        stt={
            "engine": transcript.engine,
            "model": transcript.model,
            "language": transcript.language,
            "confidence": transcript.confidence,
        },
        **{"timings.stt_queue_s": _queue_wait(turn, t["started"]), "timings.stt_s": t["seconds"]},
        stage_done_at=time.time(),
    )
    rt.events.publish(
        ref["session_id"],
        EventType.TRANSCRIPT,
        ref["turn_id"],
        text=text,
        final=True,
        confidence=transcript.confidence,
        engine=transcript.engine,
    )
    if not text:
        rt.events.publish(ref["session_id"], EventType.DONE, ref["turn_id"], status="no_speech")
    return {**ref, "skip": not text}


def _recognize_live(rt: Runtime, ref: TurnRef, language: str | None, pcm: bytearray) -> Transcript | None:
    """Feed the utterance's frames to a streaming recognizer, publishing partials, until its end."""
    stream = UtteranceStream(rt.redis, ref["turn_id"])
    # Push-to-talk: the visitor decides the end, so pauses never cut the utterance.
    push_to_talk = ref.get("mode") == PUSH_TO_TALK
    end_silence = rt.settings.audio_max_duration + 1 if push_to_talk else rt.settings.endpoint_silence
    recognizer = StreamingRecognizer(
        usable_engine(rt.settings), rt.settings, language, end_silence=end_silence, smart_endpoint=not push_to_talk
    )
    idle = rt.settings.audio_max_duration  # a client that vanished mid-utterance: finish with what came
    # An open microphone in a quiet room must not hold a recognition slot: give it back without a turn.
    listen = min(rt.settings.listen_timeout, rt.settings.audio_max_duration)
    silent_limit = int(listen * rt.settings.audio_sample_rate) * 2
    try:
        for chunk in stream.chunks(idle_timeout=min(idle, 15.0)):
            if chunk.abort:
                return None
            if chunk.end:
                return recognizer.finish()
            pcm.extend(chunk.pcm)
            if len(pcm) > silent_limit and not recognizer.in_speech and not push_to_talk:
                return None
            for transcript in recognizer.feed(chunk.pcm):
                if transcript.final:
                    return transcript
                rt.events.publish(
                    ref["session_id"],
                    EventType.TRANSCRIPT,
                    ref["turn_id"],
                    text=transcript.text,
                    final=False,
                    engine=transcript.engine,
                )
        return recognizer.finish()
    finally:
        stream.close()


def run_live_stt(rt: Runtime, ref: TurnRef) -> TurnRef | None:
    """Recognise a live utterance from its Redis stream, then record the turn; None when nothing was said."""
    with _stage(rt, ref, "stt") as t:
        session = sessions.get_session(rt.db, rt.settings, ref["session_id"])
        pcm = bytearray()
        final = _recognize_live(rt, ref, session.get("language"), pcm)
    text = (final.text if final else "").strip()
    if not text:
        rt.events.publish(ref["session_id"], EventType.DONE, ref["turn_id"], status="no_speech")
        return None
    accepted_at = time.time()
    samples = pcm16_to_float(bytes(pcm))
    upload_id = put_audio(
        rt.db,
        to_wav(samples, rt.settings.audio_sample_rate),
        bucket=UPLOADS_BUCKET,
        filename="utterance.wav",
        content_type="audio/wav",
        metadata={"session_id": ref["session_id"], "source": "ws-live"},
    )
    try:
        interactions.create_turn(
            rt.db,
            rt.settings,
            session,
            upload_id,
            turn_id=ref["turn_id"],
            status="recognized",
            transcript=text,
            source="ws-live",
            accepted_at=accepted_at,
            stage_done_at=accepted_at,
            tts_provider=session.get("tts_provider"),
            audio_seconds=round(len(samples) / rt.settings.audio_sample_rate, 3),
            stt={
                "engine": final.engine,
                "model": final.model,
                "language": final.language,
                "confidence": final.confidence,
            },
            timings={"stt_s": t["seconds"]},
        )
    except DuplicateKeyError:
        return ref  # redelivered after the turn was recorded: the chain is already on its way
    metrics.observe_recognition(
        final.engine or rt.settings.stt_engine, final.model or rt.settings.whisper_model, t["seconds"]
    )
    rt.events.publish(
        ref["session_id"],
        EventType.TRANSCRIPT,
        ref["turn_id"],
        text=text,
        final=True,
        confidence=final.confidence,
        engine=final.engine,
    )
    UtteranceStream(rt.redis, ref["turn_id"]).delete()
    return ref


def run_dialog(rt: Runtime, ref: TurnRef) -> TurnRef:
    """Answer the transcript from the project's knowledge and publish the reply text."""
    if ref.get("skip"):
        return ref
    turn = _turn(rt, ref)
    if "reply_text" in turn:
        return ref
    with _stage(rt, ref, "dialog") as t:
        history = interactions.recent_turns(
            rt.db, rt.settings, ref["session_id"], rt.settings.dialog_max_context_length, exclude_turn_id=ref["turn_id"]
        )
        reply = respond(rt.db, rt.settings, turn["project"], turn["transcript"], history)
    interactions.update_turn(
        rt.db,
        rt.settings,
        ref["turn_id"],
        status="answered",
        reply_text=reply.text,
        intent=reply.intent,
        intent_confidence=reply.confidence,
        sources=list(reply.sources),
        **{"timings.dialog_queue_s": _queue_wait(turn, t["started"]), "timings.dialog_s": t["seconds"]},
        stage_done_at=time.time(),
    )
    rt.events.publish(
        ref["session_id"],
        EventType.REPLY,
        ref["turn_id"],
        text=reply.text,
        intent=reply.intent,
        confidence=reply.confidence,
        sources=list(reply.sources),
        suggested_actions=list(reply.suggested_actions),
    )
    return ref


class _Interrupted(Exception):
    """The visitor barged in: stop speaking this reply."""


def run_tts(rt: Runtime, ref: TurnRef) -> TurnRef:
    """Speak the reply sentence by sentence, publishing each chunk's audio as soon as it exists."""
    if ref.get("skip"):
        return ref
    turn = _turn(rt, ref)
    if turn.get("status") in {"done", "interrupted"}:
        return ref
    published: list[ChunkResult] = []

    def publish(chunk: ChunkResult) -> None:
        if interruption(rt, ref["session_id"], ref["turn_id"], turn.get("accepted_at")):
            raise _Interrupted
        data = chunk.to_event()
        published.append(chunk)
        if chunk.audio_id:
            data["audio_url"] = audio_url(ref["session_id"], chunk.audio_id)
            # Cached audio is shared: the session may fetch it once its turn names it.
            interactions.update_turn(
                rt.db, rt.settings, ref["turn_id"], **{"tts.audio_ids": [c.audio_id for c in published if c.audio_id]}
            )
        rt.events.publish(ref["session_id"], EventType.AUDIO, ref["turn_id"], **data)

    try:
        with _stage(rt, ref, "tts") as t:
            speech = synthesize_reply(
                rt.db,
                rt.settings,
                text=turn["reply_text"],
                voice=turn.get("voice") or None,
                language=turn.get("language"),
                provider_name=turn.get("tts_provider") or None,
                project=turn["project"],
                session_id=ref["session_id"],
                turn_id=ref["turn_id"],
                on_chunk=publish,
            )
    except _Interrupted:
        return _finish_interrupted(rt, ref, turn, published)
    metrics.observe_synthesis(speech.provider, t["seconds"])
    return _finish(
        rt, ref, turn, "done", speech.audio_ids[0] if speech.audio_ids else None, speech.to_doc(), t["seconds"]
    )


def _finish_interrupted(rt: Runtime, ref: TurnRef, turn: dict[str, Any], published: list[ChunkResult]) -> TurnRef:
    """Record what the visitor actually heard before barging in."""
    request = interruption(rt, ref["session_id"], ref["turn_id"], turn.get("accepted_at")) or {}
    played = request.get("played_chunks")
    played = len(published) if played is None else min(played, len(published))
    tts = {
        "provider": published[0].provider if published else None,
        "chunks": len(published),
        "audio_ids": [c.audio_id for c in published if c.audio_id],
        "played_chunks": played,
        "played_text": " ".join(c.text for c in published[:played]),
    }
    audio_id = tts["audio_ids"][0] if tts["audio_ids"] else None
    return _finish(rt, ref, turn, "interrupted", audio_id, tts, None)


def _finish(
    rt: Runtime,
    ref: TurnRef,
    turn: dict[str, Any],
    status: str,
    audio_id: str | None,
    tts: dict[str, Any],
    tts_seconds: float | None,
) -> TurnRef:
    done_at = time.time()
    timings = {
        "timings.tts_queue_s": _queue_wait(turn, done_at - (tts_seconds or 0.0)),
        "timings.total_s": round(done_at - float(turn["accepted_at"]), 4),
    }
    if tts_seconds is not None:
        timings["timings.tts_s"] = tts_seconds
    interactions.update_turn(
        rt.db, rt.settings, ref["turn_id"], status=status, audio_id=audio_id, tts=tts, stage_done_at=done_at, **timings
    )
    rt.events.publish(
        ref["session_id"],
        EventType.DONE,
        ref["turn_id"],
        status=status,
        timings={k.split(".", 1)[1]: v for k, v in timings.items()},
    )
    metrics.INTERACTIONS.inc()
    return ref
