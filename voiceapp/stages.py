"""The three stages of a turn (recognition, dialog, synthesis in `synthesis_stage.py`): ids in, events out.

Each stage claims its turn (`claims.py`: one atomic update, a renewed lease, the one failure path), so of two
copies of a task only one runs it; the other re-publishes what was recorded. Where the task payload carries a
stage's inputs (the upload's id, a reply for a free voice) the engine starts while the claim is made, and nothing
it produces is recorded or published until the claim is held.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pymongo.errors import DuplicateKeyError

from . import handover, metrics, speculative
from .audio import decode, pcm16_to_float, to_wav
from .claims import (
    Claim,
    Lost,
    claim_soon,
    claim_stage,
    fail_turn,
    held,
    made,
    publish_reply,
    publish_transcript,
    queue_wait,
    replay,
    reply_language,
    running,
    running_early,
)
from .dialog.answer import respond
from .errors import NotFound, StorageUnavailable, VoiceError
from .events import EventType
from .models import Transcript
from .pipeline import continue_turn, hand_question
from .runtime import Runtime
from .storage import interactions, retention, sessions, unanswered
from .storage.audio import UPLOADS_BUCKET, get_audio, new_audio_id, put_audio
from .stt.registry import transcribe_with_fallback, usable_engine
from .stt.streaming import StreamingRecognizer
from .synthesis_stage import run_tts, speech_inputs
from .turns import DIALOG, STT, Turn, TurnRef, TurnStatus
from .utterances import PUSH_TO_TALK, UtteranceStream

log = logging.getLogger(__name__)
# Reads a stage starts before its claim returns (a few per worker thread at most; each is one MongoDB query).
_PREFETCH = ThreadPoolExecutor(max_workers=4, thread_name_prefix="stage-prefetch")

# fail_turn and reply_language are re-exported: the task base class and older callers import them from here.
__all__ = ["TurnRef", "fail_turn", "reply_language", "run_dialog", "run_live_stt", "run_stt", "run_tts"]


# ---------------------------------------------------------------- recognition

UPLOAD_WAIT_S = 10.0  # the API records a turn and stores its upload right after enqueueing it: ms, unless it died


def _upload(rt: Runtime, upload_id: str) -> bytes:
    """The turn's uploaded audio: the API's Redis hand-over, else its GridFS record (waiting briefly for it)."""
    handed = handover.take(rt.redis, upload_id)
    if handed is not None:
        return handed
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
    early = _handed_upload(rt, ref)
    if early is not None:  # recognised while the claim is made (the payload named the upload and its language)
        pending = claim_soon(rt, ref, STT, wait_missing=UPLOAD_WAIT_S)
        language = (ref.inputs or {}).get("language")
    else:
        claim = claim_stage(rt, ref, STT, wait_missing=UPLOAD_WAIT_S)
        if claim is None:
            return replay(rt, ref, STT)
        pending = made(claim)
        language = claim.turn.get("language")
    try:
        with running_early(rt, ref, pending) as t:
            data = early if early is not None else _upload(rt, held(pending).turn.get("upload_id") or "")
            transcript = transcribe_with_fallback(rt.settings, decode(data, rt.settings), language)
        claim = held(pending)
    except Lost:
        return replay(rt, ref, STT)
    return _recognized(rt, ref, claim, transcript, t)


def _handed_upload(rt: Runtime, ref: TurnRef) -> bytes | None:
    """The upload the payload names, from the API's Redis hand-over; None when it is not there (or not named)."""
    upload_id = (ref.inputs or {}).get("upload_id")
    return handover.take(rt.redis, upload_id) if isinstance(upload_id, str) and upload_id else None


def _recognized(rt: Runtime, ref: TurnRef, claim: Claim, transcript: Transcript, t: dict[str, float]) -> TurnRef:
    """Record the transcript, publish it and hand the turn on (skipped when nothing was said)."""
    turn = claim.turn
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
        **{"timings.stt_queue_s": queue_wait(turn, t["started"]), "timings.stt_s": t["seconds"]},
        stage_done_at=time.time(),
    ):
        return replay(rt, ref, STT)
    metrics.observe_recognition(transcript.engine, transcript.model, t["seconds"])
    publish_transcript(rt, ref, text, stt)
    if text:
        hand_question(rt, ref.turn_id, turn["project"], text)
    else:
        rt.events.publish(ref.session_id, EventType.DONE, ref.turn_id, status=TurnStatus.NO_SPEECH.value)
    _forget_upload(rt, turn["upload_id"])
    return ref.handing_on(skip=not text)


def _forget_upload(rt: Runtime, upload_id: str | None) -> None:
    """VOICE_RECORDING_RETENTION=0: delete the recording, waiting for it if the API has not stored it yet.

    Recognition reads the Redis hand-over, so it may finish before the API's GridFS store (made after the
    enqueue) lands; deleting then would find nothing and leave the recording to the hourly sweep.
    """
    if rt.settings.retention_seconds != 0 or not upload_id:
        return
    deadline = time.monotonic() + UPLOAD_WAIT_S
    while not retention.after_recognition(rt.db, rt.settings, upload_id) and time.monotonic() < deadline:
        time.sleep(0.01)


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
        background_drafts=True,
    )
    speculation = speculative.Speculation(rt, ref, language)
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
            # At a pause the words may be the whole turn: its reply is prepared while the endpoint waits.
            speculation.offer(recognizer.speculation)
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
        return replay(rt, ref, STT)
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
        return replay(rt, ref, STT)  # another copy recorded it first: it publishes and hands on
    metrics.observe_recognition(
        final.engine or rt.settings.stt_engine, final.model or rt.settings.whisper_model, seconds
    )
    publish_transcript(rt, ref, text, stt)
    # Dialog starts now; the recording is stored while it runs (the turn already names its id). Stored even
    # when the hand-off fails: the retried task then finds the turn recorded and only hands it on.
    hand_question(rt, ref.turn_id, session["project"], text)
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
    """Answer the transcript from the project's knowledge and publish the reply text.

    With the question recognition handed over through Redis it answers while it claims the turn; nothing is
    published before the claim is held.
    """
    ref = TurnRef.of(ref)
    if ref.skip:
        return ref
    # The session's last turns are read while the claim is made: two MongoDB round trips in the time of one.
    history = _PREFETCH.submit(
        interactions.recent_turns,
        rt.db,
        rt.settings,
        ref.session_id,
        rt.settings.dialog_max_context_length,
        exclude_turn_id=ref.turn_id,
    )
    asked = handover.take_question(rt.redis, ref.turn_id)
    if asked is not None:
        pending = claim_soon(rt, ref, DIALOG)
    else:
        claim = claim_stage(rt, ref, DIALOG)
        if claim is None:
            history.cancel()
            return replay(rt, ref, DIALOG)
        pending, asked = made(claim), (claim.turn["project"], claim.turn["transcript"])
    try:
        with running_early(rt, ref, pending) as t:
            reply = respond(rt.db, rt.settings, *asked, history.result())
        claim = held(pending)
    except Lost:
        return replay(rt, ref, DIALOG)
    turn = claim.turn
    if (turn["project"], turn["transcript"]) != asked:  # the record decides (a stale hand-over)
        with running(rt, ref, claim) as t:
            reply = respond(rt.db, rt.settings, turn["project"], turn["transcript"], history.result())
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
        **{"timings.dialog_queue_s": queue_wait(turn, t["started"]), "timings.dialog_s": t["seconds"]},
        stage_done_at=time.time(),
    ):
        return replay(rt, ref, DIALOG)
    if reply.intent == "fallback":  # the site owner's list of what the knowledge base lacks
        unanswered.record(rt.db, rt.settings, turn["project"], turn["transcript"], ref.session_id, ref.turn_id)
    publish_reply(rt, ref, {**turn, **fields})
    return ref.handing_on(inputs=speech_inputs(rt, {**turn, **fields}))
