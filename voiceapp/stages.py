"""The three stages of a turn (recognition, dialog, synthesis): ids in, events out.

Each stage reads what it needs from MongoDB by id, records its result and timing on the turn's
interaction document, and publishes one event. A stage that finds its result already recorded
returns at once, so a redelivered task does no work twice and emits no duplicate event.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Any, Iterator

from pymongo.errors import DuplicateKeyError

from . import metrics
from .audio import decode, pcm16_to_float, to_wav
from .dialog.answer import respond
from .errors import VoiceError
from .events import EventType
from .models import Transcript
from .runtime import Runtime
from .storage import interactions, sessions
from .storage.audio import REPLIES_BUCKET, UPLOADS_BUCKET, get_audio, put_audio
from .stt.registry import get_engine
from .stt.streaming import StreamingRecognizer
from .urls import audio_url
from .utterances import UtteranceStream
from .tts.registry import get_provider

log = logging.getLogger(__name__)

TurnRef = dict[str, Any]  # {"session_id": ..., "turn_id": ...}: all a task passes on


@contextmanager
def _stage(rt: Runtime, ref: TurnRef, name: str) -> Iterator[dict[str, float]]:
    """Time a stage; on a voice error, mark the turn failed and tell the client, then re-raise."""
    timing: dict[str, float] = {"started": time.time()}
    try:
        yield timing
    except VoiceError as err:
        log.warning("turn %s failed in %s: %s (%s)", ref["turn_id"], name, err.message, err.code)
        interactions.update_turn(rt.db, rt.settings, ref["turn_id"], status="error",
                                 error={"stage": name, "code": err.code, "message": err.message})
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
        engine = get_engine(rt.settings)
        transcript = engine.transcribe(decode(data, rt.settings), turn.get("language"))
    metrics.observe_recognition(engine.name, engine.model, t["seconds"])
    text = transcript.text.strip()
    status = "recognized" if text else "no_speech"
    interactions.update_turn(
        rt.db, rt.settings, ref["turn_id"], status=status, transcript=text,
        stt={"engine": transcript.engine or engine.name, "model": transcript.model or engine.model,
             "language": transcript.language, "confidence": transcript.confidence},
        **{"timings.stt_queue_s": _queue_wait(turn, t["started"]), "timings.stt_s": t["seconds"]},
        stage_done_at=time.time(),
    )
    rt.events.publish(ref["session_id"], EventType.TRANSCRIPT, ref["turn_id"], text=text, final=True,
                      confidence=transcript.confidence, engine=transcript.engine or engine.name)
    if not text:
        rt.events.publish(ref["session_id"], EventType.DONE, ref["turn_id"], status="no_speech")
    return {**ref, "skip": not text}


def _recognize_live(rt: Runtime, ref: TurnRef, language: str | None, pcm: bytearray) -> Transcript | None:
    """Feed the utterance's frames to a streaming recognizer, publishing partials, until its end."""
    stream = UtteranceStream(rt.redis, ref["turn_id"])
    recognizer = StreamingRecognizer(get_engine(rt.settings), rt.settings, language)
    idle = rt.settings.audio_max_duration  # a client that vanished mid-utterance: finish with what came
    try:
        for chunk in stream.chunks(idle_timeout=min(idle, 15.0)):
            if chunk.abort:
                return None
            if chunk.end:
                return recognizer.finish()
            pcm.extend(chunk.pcm)
            for transcript in recognizer.feed(chunk.pcm):
                if transcript.final:
                    return transcript
                rt.events.publish(ref["session_id"], EventType.TRANSCRIPT, ref["turn_id"], text=transcript.text,
                                  final=False, engine=transcript.engine)
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
    upload_id = put_audio(rt.db, to_wav(samples, rt.settings.audio_sample_rate), bucket=UPLOADS_BUCKET,
                          filename="utterance.wav", content_type="audio/wav",
                          metadata={"session_id": ref["session_id"], "source": "ws-live"})
    try:
        interactions.create_turn(
            rt.db, rt.settings, session, upload_id, turn_id=ref["turn_id"], status="recognized", transcript=text,
            source="ws-live", accepted_at=accepted_at, stage_done_at=accepted_at, tts_provider=session.get("tts_provider"),
            audio_seconds=round(len(samples) / rt.settings.audio_sample_rate, 3),
            stt={"engine": final.engine, "model": final.model, "language": final.language,
                 "confidence": final.confidence},
            timings={"stt_s": t["seconds"]})
    except DuplicateKeyError:
        return ref  # redelivered after the turn was recorded: the chain is already on its way
    metrics.observe_recognition(final.engine or rt.settings.stt_engine, final.model or rt.settings.whisper_model,
                                t["seconds"])
    rt.events.publish(ref["session_id"], EventType.TRANSCRIPT, ref["turn_id"], text=text, final=True,
                      confidence=final.confidence, engine=final.engine)
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
        history = interactions.recent_turns(rt.db, rt.settings, ref["session_id"],
                                            rt.settings.dialog_max_context_length,
                                            exclude_turn_id=ref["turn_id"])
        reply = respond(rt.db, rt.settings, turn["project"], turn["transcript"], history)
    interactions.update_turn(
        rt.db, rt.settings, ref["turn_id"], status="answered", reply_text=reply.text, intent=reply.intent,
        intent_confidence=reply.confidence, sources=list(reply.sources),
        **{"timings.dialog_queue_s": _queue_wait(turn, t["started"]), "timings.dialog_s": t["seconds"]},
        stage_done_at=time.time(),
    )
    rt.events.publish(ref["session_id"], EventType.REPLY, ref["turn_id"], text=reply.text, intent=reply.intent,
                      confidence=reply.confidence, sources=list(reply.sources),
                      suggested_actions=list(reply.suggested_actions))
    return ref


def run_tts(rt: Runtime, ref: TurnRef) -> TurnRef:
    """Synthesise the reply, store its audio and publish where to fetch it."""
    if ref.get("skip"):
        return ref
    turn = _turn(rt, ref)
    if turn.get("status") == "done":
        return ref
    with _stage(rt, ref, "tts") as t:
        provider = get_provider(rt.settings, turn.get("tts_provider") or None)
        synthesis = provider.synthesize(turn["reply_text"], turn.get("voice"), turn.get("language"))
        audio_id = put_audio(rt.db, synthesis.audio, bucket=REPLIES_BUCKET, filename=f"{ref['turn_id']}.wav",
                             content_type=synthesis.mime_type,
                             metadata={"session_id": ref["session_id"], "turn_id": ref["turn_id"],
                                       "provider": synthesis.provider, "voice": synthesis.voice})
    metrics.observe_synthesis(synthesis.provider, t["seconds"])
    done_at = time.time()
    timings = {"timings.tts_queue_s": _queue_wait(turn, t["started"]), "timings.tts_s": t["seconds"],
               "timings.total_s": round(done_at - float(turn["accepted_at"]), 4)}
    url = audio_url(ref["session_id"], audio_id)
    interactions.update_turn(rt.db, rt.settings, ref["turn_id"], status="done", audio_id=audio_id,
                             tts={"provider": synthesis.provider, "voice": synthesis.voice},
                             stage_done_at=done_at, **timings)
    rt.events.publish(ref["session_id"], EventType.AUDIO, ref["turn_id"], audio_url=url, audio_id=audio_id,
                      mime_type=synthesis.mime_type, provider=synthesis.provider)
    rt.events.publish(ref["session_id"], EventType.DONE, ref["turn_id"], status="done",
                      timings={k.split(".", 1)[1]: v for k, v in timings.items()})
    metrics.INTERACTIONS.inc()
    return ref
