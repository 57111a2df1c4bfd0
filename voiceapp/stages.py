"""The three stages of a turn (recognition, dialog, synthesis): ids in, events out.

Each stage claims the turn with one atomic conditional update (status `<stage>` ready -> `<stage>-running`),
so of two copies of a task only one runs the stage; the other waits for it and then re-publishes the
recorded result (the events' once-keys drop repeats), which also repairs a crash between recording a
result and publishing it. A claim is leased and renewed while the stage runs: a worker that died stops
renewing, and a redelivered copy takes the stage over once the lease has run out.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from typing import Any

import redis
from pymongo.errors import DuplicateKeyError, PyMongoError

from . import metrics
from .audio import decode, pcm16_to_float, to_wav
from .bargein import interruption
from .dialog.answer import respond
from .dialog.text import language_of
from .errors import NotFound, StorageUnavailable, VoiceError
from .events import EventType
from .models import Transcript
from .pipeline import continue_turn
from .runtime import Runtime
from .storage import interactions, retention, sessions, unanswered
from .storage.audio import UPLOADS_BUCKET, get_audio, new_audio_id, put_audio
from .stt.base import language_code
from .stt.registry import transcribe_with_fallback, usable_engine
from .stt.streaming import StreamingRecognizer
from .tts.service import ChunkResult, synthesize_reply
from .turns import DIALOG, STAGES, STT, TTS, Stage, Turn, TurnRef, TurnStatus
from .urls import audio_url
from .utterances import PUSH_TO_TALK, UtteranceStream

log = logging.getLogger(__name__)

__all__ = ["TurnRef", "fail_turn", "run_dialog", "run_live_stt", "run_stt", "run_tts"]

_HOST = f"{socket.gethostname()}:{os.getpid()}"
# Turn statuses that end a turn off the main line: later stages have nothing to do.
_SKIP = {TurnStatus.NO_SPEECH, TurnStatus.ERROR, TurnStatus.INTERRUPTED}


def fail_turn(rt: Runtime, ref: TurnRef, stage: str, code: str, message: str) -> None:
    """The one failure path: mark the turn failed and tell the client (each step survives the other's outage)."""
    log.warning("turn %s failed in %s: %s (%s)", ref.turn_id, stage, message, code)
    try:
        interactions.update_turn(
            rt.db,
            rt.settings,
            ref.turn_id,
            status=TurnStatus.ERROR.value,
            error={"stage": stage, "code": code, "message": message},
        )
    except NotFound:
        pass  # a live utterance has no turn document until it is recognised
    except PyMongoError as err:  # MongoDB may be what is down: the event still tells the client
        log.warning("could not record the failure of turn %s: %s", ref.turn_id, type(err).__name__)
    try:
        rt.events.publish(ref.session_id, EventType.ERROR, ref.turn_id, stage=stage, code=code, message=message)
    except redis.RedisError as err:
        log.warning("could not publish the failure of turn %s: %s", ref.turn_id, err)


class _Interrupted(Exception):
    """The visitor barged in: stop speaking this reply."""


@dataclass(frozen=True)
class _Claim:
    """A stage this copy of the task holds on the turn: who holds it and the turn as it was claimed."""

    stage: Stage
    owner: str
    turn: Turn

    def finish(self, rt: Runtime, ref: TurnRef, **fields: Any) -> bool:
        """Record the stage's result; False (nothing recorded) if the claim was lost to another copy."""
        done = interactions.finish_claim(rt.db, rt.settings, ref.turn_id, self.stage.running, self.owner, **fields)
        if not done:
            log.warning(
                "turn %s: %s claim of %s was taken over; result dropped", ref.turn_id, self.stage.name, self.owner
            )
        return done


def _claim(rt: Runtime, ref: TurnRef, stage: Stage) -> _Claim | None:
    """Claim `stage` of the turn; None when the turn is past it (or was never meant for it)."""
    owner = f"{_HOST}:{uuid.uuid4().hex[:8]}"
    lease = float(rt.settings.task_visibility_timeout)
    while True:
        turn = interactions.claim_turn(rt.db, rt.settings, ref.turn_id, stage.ready, stage.running, owner, lease)
        if turn is not None:
            return _Claim(stage, owner, turn)
        current = interactions.get_turn(rt.db, rt.settings, ref.session_id, ref.turn_id)
        status = current.get("status")
        if status == stage.ready:
            continue  # the holder gave it back a moment ago
        if status != stage.running:
            return None
        # Another copy runs it: wait for its result, or for its lease to lapse if its worker died.
        time.sleep(min(0.5, max(0.05, float(current.get("claim_until") or 0) - time.time())))


@contextmanager
def _running(rt: Runtime, ref: TurnRef, claim: _Claim) -> Iterator[dict[str, float]]:
    """Time a claimed stage and renew its lease; a voice error fails the turn, an outage gives the claim back."""
    timing: dict[str, float] = {"started": time.time()}
    stop = _renew(rt, ref, claim)
    try:
        yield timing
    except VoiceError as err:
        if not isinstance(err, StorageUnavailable):
            fail_turn(rt, ref, claim.stage.name, err.code, err.message)
            raise
        _release(rt, ref, claim)  # an outage, not a failed turn: the task retries with backoff
        raise
    except _Interrupted:
        raise  # the claim still holds: the stage records what was heard
    except Exception:
        _release(rt, ref, claim)
        raise
    finally:
        stop.set()
    timing["seconds"] = round(time.time() - timing["started"], 4)


def _release(rt: Runtime, ref: TurnRef, claim: _Claim) -> None:
    stage = claim.stage
    with suppress(PyMongoError):  # MongoDB down: the lease runs out instead
        interactions.release_claim(rt.db, rt.settings, ref.turn_id, stage.running, stage.ready, claim.owner)


def _renew(rt: Runtime, ref: TurnRef, claim: _Claim) -> threading.Event:
    """Renew the claim's lease every third of it until the returned event is set."""
    lease = float(rt.settings.task_visibility_timeout)
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(lease / 3):
            try:
                interactions.renew_claim(rt.db, rt.settings, ref.turn_id, claim.stage.running, claim.owner, lease)
            except PyMongoError as err:  # the stage itself will notice the outage
                log.debug("could not renew the claim on turn %s: %s", ref.turn_id, type(err).__name__)

    threading.Thread(target=run, name=f"claim-{ref.turn_id[:8]}", daemon=True).start()
    return stop


def _queue_wait(turn: Mapping[str, Any], started: float) -> float:
    return round(max(0.0, started - float(turn.get("stage_done_at") or turn.get("accepted_at") or started)), 4)


def reply_language(turn: Mapping[str, Any]) -> str | None:
    """The session's language, or the one the visitor spoke when the session detects it ("auto")."""
    asked = turn.get("language")
    if language_code(asked) is not None:
        return asked
    heard = (turn.get("stt") or {}).get("language")
    if language_code(heard) is not None:
        return heard
    return language_of(turn.get("transcript") or "")  # a typed question in an "auto" session: its words decide


# ---------------------------------------------------------------- re-publishing recorded results


def _replay(rt: Runtime, ref: TurnRef, upto: Stage) -> TurnRef:
    """Publish again what the turn recorded up to stage `upto` (repeats are dropped by the events' once-keys)."""
    turn = interactions.get_turn(rt.db, rt.settings, ref.session_id, ref.turn_id)
    for stage in STAGES[: STAGES.index(upto) + 1]:
        _REPLAYS[stage.name](rt, ref, turn)
    error = turn.get("error")
    if turn.get("status") == TurnStatus.ERROR and error:
        rt.events.publish(ref.session_id, EventType.ERROR, ref.turn_id, **error)
    return replace(ref, skip=turn.get("status") in _SKIP)


def _replay_stt(rt: Runtime, ref: TurnRef, turn: Mapping[str, Any]) -> None:
    if "transcript" in turn:
        _publish_transcript(rt, ref, turn["transcript"], turn.get("stt") or {})
    if turn.get("status") == TurnStatus.NO_SPEECH:
        rt.events.publish(ref.session_id, EventType.DONE, ref.turn_id, status=TurnStatus.NO_SPEECH.value)


def _replay_dialog(rt: Runtime, ref: TurnRef, turn: Mapping[str, Any]) -> None:
    if "reply_text" in turn:
        _publish_reply(rt, ref, turn)


def _replay_tts(rt: Runtime, ref: TurnRef, turn: Mapping[str, Any]) -> None:
    for data in (turn.get("tts") or {}).get("events") or []:
        rt.events.publish(ref.session_id, EventType.AUDIO, ref.turn_id, **data)
    if turn.get("status") in (TurnStatus.DONE, TurnStatus.INTERRUPTED):
        timings = {k: v for k, v in (turn.get("timings") or {}).items() if k in _DONE_TIMINGS}
        rt.events.publish(ref.session_id, EventType.DONE, ref.turn_id, status=turn["status"], timings=timings)


_REPLAYS = {"stt": _replay_stt, "dialog": _replay_dialog, "tts": _replay_tts}
_DONE_TIMINGS = ("tts_queue_s", "total_s", "tts_s")


def _publish_transcript(rt: Runtime, ref: TurnRef, text: str, stt: dict[str, Any]) -> None:
    rt.events.publish(
        ref.session_id,
        EventType.TRANSCRIPT,
        ref.turn_id,
        text=text,
        final=True,
        confidence=stt.get("confidence"),
        engine=stt.get("engine"),
    )


def _publish_reply(rt: Runtime, ref: TurnRef, turn: Mapping[str, Any]) -> None:
    rt.events.publish(
        ref.session_id,
        EventType.REPLY,
        ref.turn_id,
        text=turn["reply_text"],
        intent=turn.get("intent"),
        confidence=turn.get("intent_confidence"),
        sources=list(turn.get("sources") or []),
        suggested_actions=list(turn.get("suggested_actions") or []),
        language=reply_language(turn),  # the widget's browser voice speaks the reply in it
    )


# ---------------------------------------------------------------- recognition

UPLOAD_WAIT_S = 10.0  # the API stores an upload right after enqueueing its turn: milliseconds, unless it died


def _upload(rt: Runtime, upload_id: str) -> bytes:
    """The turn's uploaded audio, waiting briefly for the API to finish storing it."""
    deadline = time.monotonic() + UPLOAD_WAIT_S
    while True:
        try:
            return get_audio(rt.db, upload_id, bucket=UPLOADS_BUCKET)[0]
        except NotFound:
            if time.monotonic() >= deadline:
                raise NotFound("the turn's audio was never stored; send it again", code="audio_not_found") from None
            time.sleep(0.01)


def run_stt(rt: Runtime, ref: TurnRef | dict[str, Any]) -> TurnRef:
    """Recognise the uploaded audio and publish the final transcript."""
    ref = TurnRef.of(ref)
    claim = _claim(rt, ref, STT)
    if claim is None:
        return _replay(rt, ref, STT)
    turn = claim.turn
    with _running(rt, ref, claim) as t:
        data = _upload(rt, turn.get("upload_id") or "")
        transcript = transcribe_with_fallback(rt.settings, decode(data, rt.settings), turn.get("language"))
    text = transcript.text.strip()
    stt = {
        "engine": transcript.engine,
        "model": transcript.model,
        "language": transcript.language,
        "confidence": transcript.confidence,
    }
    if not claim.finish(
        rt,
        ref,
        status=(TurnStatus.RECOGNIZED if text else TurnStatus.NO_SPEECH).value,
        transcript=text,
        stt=stt,
        **{"timings.stt_queue_s": _queue_wait(turn, t["started"]), "timings.stt_s": t["seconds"]},
        stage_done_at=time.time(),
    ):
        return _replay(rt, ref, STT)
    retention.after_recognition(rt.db, rt.settings, turn["upload_id"])  # VOICE_RECORDING_RETENTION=0
    metrics.observe_recognition(transcript.engine, transcript.model, t["seconds"])
    _publish_transcript(rt, ref, text, stt)
    if not text:
        rt.events.publish(ref.session_id, EventType.DONE, ref.turn_id, status=TurnStatus.NO_SPEECH.value)
    return replace(ref, skip=not text)


def _waited(entry_id: str) -> float:
    """Seconds since the front appended a stream entry (its id starts with Redis's clock in ms)."""
    return max(0.0, time.time() - int(entry_id.split("-", 1)[0]) / 1000)


def _recognize_live(rt: Runtime, ref: TurnRef, language: str | None, pcm: bytearray) -> Transcript | None:
    """Feed the utterance's frames to a streaming recognizer, publishing partials, until its end."""
    stream = UtteranceStream(rt.redis, ref.turn_id)
    # Push-to-talk: the visitor decides the end, so pauses never cut the utterance.
    push_to_talk = ref.mode == PUSH_TO_TALK
    end_silence = rt.settings.audio_max_duration + 1 if push_to_talk else rt.settings.endpoint_silence
    recognizer = StreamingRecognizer(
        usable_engine(rt.settings, language),
        rt.settings,
        language,
        end_silence=end_silence,
        smart_endpoint=not push_to_talk,
    )
    idle = rt.settings.audio_max_duration  # a client that vanished mid-utterance: finish with what came
    # An open microphone in a quiet room must not hold a recognition slot: give it back without a turn.
    listen = min(rt.settings.listen_timeout, rt.settings.audio_max_duration)
    silent_limit = int(listen * rt.settings.audio_sample_rate) * 2
    try:
        for chunk in stream.chunks(idle_timeout=min(idle, rt.settings.frame_gap_timeout + 2.0)):
            if chunk.abort:
                return None
            if chunk.end:
                return recognizer.finish()
            pcm.extend(chunk.pcm)
            if len(pcm) > silent_limit and not recognizer.in_speech and not push_to_talk:
                return None
            for transcript in recognizer.feed(chunk.pcm, lag=_waited(chunk.entry_id)):
                if transcript.final:
                    return transcript
                rt.events.publish(
                    ref.session_id,
                    EventType.TRANSCRIPT,
                    ref.turn_id,
                    text=transcript.text,
                    final=False,
                    engine=transcript.engine,
                )
        return recognizer.finish()
    finally:
        stream.close()


def _recorded(rt: Runtime, ref: TurnRef) -> Turn | None:
    try:
        return interactions.get_turn(rt.db, rt.settings, ref.session_id, ref.turn_id)
    except NotFound:
        return None


def run_live_stt(rt: Runtime, ref: TurnRef | dict[str, Any]) -> TurnRef | None:
    """Recognise a live utterance from its Redis stream, then record the turn; None when nothing was said.

    A redelivered copy finds the turn recorded (its audio is gone): it re-publishes the transcript and
    returns the ref, so the caller only makes sure the turn was handed on (pipeline.continue_turn is once-only).
    """
    ref = TurnRef.of(ref)
    if _recorded(rt, ref) is not None:
        return _replay(rt, ref, STT)
    timing = {"started": time.time()}
    try:
        session = sessions.get_session(rt.db, rt.settings, ref.session_id)
        pcm = bytearray()
        final = _recognize_live(rt, ref, session.get("language"), pcm)
    except VoiceError as err:
        if not isinstance(err, StorageUnavailable):
            fail_turn(rt, ref, STT.name, err.code, err.message)
        raise
    seconds = round(time.time() - timing["started"], 4)
    text = (final.text if final else "").strip()
    if final is None or not text:
        rt.events.publish(ref.session_id, EventType.DONE, ref.turn_id, status=TurnStatus.NO_SPEECH.value)
        return None
    stt = {"engine": final.engine, "model": final.model, "language": final.language, "confidence": final.confidence}
    try:
        upload_id = _record_live(rt, ref, session, pcm, text, stt, seconds)
    except DuplicateKeyError:
        return _replay(rt, ref, STT)  # another copy recorded it first: it publishes and hands on
    metrics.observe_recognition(
        final.engine or rt.settings.stt_engine, final.model or rt.settings.whisper_model, seconds
    )
    _publish_transcript(rt, ref, text, stt)
    # Dialog starts now; the recording is stored while it runs (the turn already names its id). Stored even
    # when the hand-off fails: the retried task then finds the turn recorded and only hands it on.
    try:
        continue_turn(rt, ref)
    finally:
        _store_live_audio(rt, ref, upload_id, pcm)
    UtteranceStream(rt.redis, ref.turn_id).delete()
    return ref


def _record_live(
    rt: Runtime, ref: TurnRef, session: dict[str, Any], pcm: bytearray, text: str, stt: dict[str, Any], seconds: float
) -> str:
    """Insert the turn, already recognised, naming its recording's reserved id (DuplicateKeyError when it exists)."""
    accepted_at = time.time()
    upload_id = new_audio_id()
    interactions.create_turn(
        rt.db,
        rt.settings,
        session,
        upload_id,
        turn_id=ref.turn_id,
        status=TurnStatus.RECOGNIZED.value,
        transcript=text,
        source="ws-live",
        accepted_at=accepted_at,
        stage_done_at=accepted_at,
        tts_provider=session.get("tts_provider"),
        audio_seconds=round(len(pcm) / 2 / rt.settings.audio_sample_rate, 3),
        stt=stt,
        timings={"stt_s": seconds},
    )
    return upload_id


def _store_live_audio(rt: Runtime, ref: TurnRef, upload_id: str, pcm: bytearray) -> None:
    """Store the utterance's recording under the id its turn names, then apply the retention policy."""
    put_audio(
        rt.db,
        to_wav(pcm16_to_float(bytes(pcm)), rt.settings.audio_sample_rate),
        bucket=UPLOADS_BUCKET,
        filename="utterance.wav",
        content_type="audio/wav",
        metadata={"session_id": ref.session_id, "source": "ws-live"},
        audio_id=upload_id,
    )
    retention.after_recognition(rt.db, rt.settings, upload_id)  # VOICE_RECORDING_RETENTION=0


# ---------------------------------------------------------------- dialog


def run_dialog(rt: Runtime, ref: TurnRef | dict[str, Any]) -> TurnRef:
    """Answer the transcript from the project's knowledge and publish the reply text."""
    ref = TurnRef.of(ref)
    if ref.skip:
        return ref
    claim = _claim(rt, ref, DIALOG)
    if claim is None:
        return _replay(rt, ref, DIALOG)
    turn = claim.turn
    with _running(rt, ref, claim) as t:
        history = interactions.recent_turns(
            rt.db, rt.settings, ref.session_id, rt.settings.dialog_max_context_length, exclude_turn_id=ref.turn_id
        )
        reply = respond(rt.db, rt.settings, turn["project"], turn["transcript"], history)
    fields = {
        "reply_text": reply.text,
        "intent": reply.intent,
        "intent_confidence": reply.confidence,
        "sources": list(reply.sources),
        "suggested_actions": list(reply.suggested_actions),
    }
    if not claim.finish(
        rt,
        ref,
        status=TurnStatus.ANSWERED.value,
        **fields,
        **{"timings.dialog_queue_s": _queue_wait(turn, t["started"]), "timings.dialog_s": t["seconds"]},
        stage_done_at=time.time(),
    ):
        return _replay(rt, ref, DIALOG)
    if reply.intent == "fallback":  # the site owner's list of what the knowledge base lacks
        unanswered.record(rt.db, rt.settings, turn["project"], turn["transcript"], ref.session_id, ref.turn_id)
    _publish_reply(rt, ref, {**turn, **fields})
    return ref


# ---------------------------------------------------------------- synthesis


def run_tts(rt: Runtime, ref: TurnRef | dict[str, Any]) -> TurnRef:
    """Speak the reply sentence by sentence, publishing each chunk's audio as soon as it exists."""
    ref = TurnRef.of(ref)
    if ref.skip:
        return ref
    claim = _claim(rt, ref, TTS)
    if claim is None:
        return _replay(rt, ref, TTS)
    turn = claim.turn
    published: list[ChunkResult] = []
    events: list[dict[str, Any]] = []

    def publish(chunk: ChunkResult) -> None:
        if interruption(rt, ref.session_id, ref.turn_id, turn.get("accepted_at")):
            raise _Interrupted
        data = chunk.to_event()
        published.append(chunk)
        if chunk.audio_id:
            data["audio_url"] = audio_url(ref.session_id, chunk.audio_id)
        events.append(data)
        # Recorded before it is sent: the session may fetch cached (shared) audio once its turn names it,
        # and a redelivered copy can send the chunk again if this worker dies right after.
        interactions.update_turn(
            rt.db,
            rt.settings,
            ref.turn_id,
            **{"tts.audio_ids": [c.audio_id for c in published if c.audio_id], "tts.events": events},
        )
        rt.events.publish(ref.session_id, EventType.AUDIO, ref.turn_id, **data)

    try:
        with _running(rt, ref, claim) as t:
            speech = synthesize_reply(
                rt.db,
                rt.settings,
                text=turn["reply_text"],
                voice=turn.get("voice") or None,
                language=reply_language(turn),
                provider_name=turn.get("tts_provider") or None,
                project=turn["project"],
                session_id=ref.session_id,
                turn_id=ref.turn_id,
                on_chunk=publish,
            )
    except _Interrupted:
        return _finish_interrupted(rt, ref, claim, published, events)
    audio_id = speech.audio_ids[0] if speech.audio_ids else None
    tts = {**speech.to_doc(), "events": events}
    return _finish(rt, ref, claim, TurnStatus.DONE, audio_id, tts, t["seconds"])


def _finish_interrupted(
    rt: Runtime, ref: TurnRef, claim: _Claim, published: list[ChunkResult], events: list[dict[str, Any]]
) -> TurnRef:
    """Record what the visitor actually heard before barging in."""
    request = interruption(rt, ref.session_id, ref.turn_id, claim.turn.get("accepted_at")) or {}
    played = request.get("played_chunks")
    played = len(published) if played is None else min(played, len(published))
    audio_ids = [c.audio_id for c in published if c.audio_id]
    tts = {
        "provider": published[0].provider if published else None,
        "chunks": len(published),
        "audio_ids": audio_ids,
        "played_chunks": played,
        "played_text": " ".join(c.text for c in published[:played]),
        "events": events,
    }
    audio_id = audio_ids[0] if audio_ids else None
    return _finish(rt, ref, claim, TurnStatus.INTERRUPTED, audio_id, tts, None)


def _finish(
    rt: Runtime,
    ref: TurnRef,
    claim: _Claim,
    status: TurnStatus,
    audio_id: str | None,
    tts: dict[str, Any],
    tts_seconds: float | None,
) -> TurnRef:
    done_at = time.time()
    timings = {
        "timings.tts_queue_s": _queue_wait(claim.turn, done_at - (tts_seconds or 0.0)),
        "timings.total_s": round(done_at - float(claim.turn["accepted_at"]), 4),
    }
    if tts_seconds is not None:
        timings["timings.tts_s"] = tts_seconds
    if not claim.finish(rt, ref, status=status.value, audio_id=audio_id, tts=tts, stage_done_at=done_at, **timings):
        return _replay(rt, ref, TTS)
    rt.events.publish(
        ref.session_id,
        EventType.DONE,
        ref.turn_id,
        status=status.value,
        timings={k.split(".", 1)[1]: v for k, v in timings.items()},
    )
    metrics.INTERACTIONS.inc()
    return replace(ref, skip=status != TurnStatus.DONE)
