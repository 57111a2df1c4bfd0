"""The synthesis stage of a turn: the reply spoken sentence by sentence, each chunk published as soon as it exists.

With a free local voice it starts on the reply its task payload carries while it claims the turn; nothing is
published before the claim is held.
"""

from __future__ import annotations

import time
from typing import Any

from . import metrics, speculative
from .bargein import interruption
from .claims import (
    Claim,
    Interrupted,
    Lost,
    claim_soon,
    claim_stage,
    held,
    made,
    queue_wait,
    replay,
    reply_language,
    running_early,
)
from .events import EventType
from .runtime import Runtime
from .storage import interactions
from .tts.service import ChunkResult, free_reply, synthesize_reply
from .turns import TTS, Turn, TurnRef, TurnStatus
from .urls import audio_url

MAX_HANDED_REPLY = 4000  # characters: a longer reply is read from the turn by the TTS stage (messages stay small)


def speech_inputs(rt: Runtime, turn: Turn | dict[str, Any]) -> dict[str, Any] | None:
    """What synthesis needs to start before its claim returns: only for replies free local voices speak."""
    speech = _speech_of(turn)
    if len(speech["text"]) > MAX_HANDED_REPLY or not free_reply(
        rt.settings, speech["provider"], speech["voice"], speech["language"]
    ):
        return None  # a paid voice is never paid for a turn this copy does not hold
    return speech


def run_tts(rt: Runtime, ref: TurnRef | dict[str, Any]) -> TurnRef:
    """Speak the reply sentence by sentence, publishing each chunk's audio as soon as it exists."""
    ref = TurnRef.of(ref)
    if ref.skip:
        return ref
    speech = _early_speech(rt, ref)
    if speech is not None:  # synthesized while the claim is made; nothing is published before it is held
        pending = claim_soon(rt, ref, TTS)
        transcript = None  # no reply was prepared for this turn: nothing to wait for
    else:
        claim = claim_stage(rt, ref, TTS)
        if claim is None:
            return replay(rt, ref, TTS)
        pending, speech = made(claim), _speech_of(claim.turn)
        transcript = claim.turn.get("transcript") or ""
    published: list[ChunkResult] = []
    events: list[dict[str, Any]] = []

    def publish(chunk: ChunkResult) -> None:
        turn = held(pending).turn
        if interruption(rt, ref.session_id, ref.turn_id, turn.get("accepted_at")):
            raise Interrupted
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
        with running_early(rt, ref, pending) as t:
            waited = (
                0.0 if transcript is None else speculative.await_prepared(rt, ref.turn_id, transcript, speech["text"])
            )
            result = synthesize_reply(
                rt.db,
                rt.settings,
                text=speech["text"],
                voice=speech.get("voice") or None,
                language=speech.get("language"),
                provider_name=speech.get("provider") or None,
                project=speech["project"],
                session_id=ref.session_id,
                turn_id=ref.turn_id,
                on_chunk=publish,
                fresh=rt.redis,
            )
        claim = held(pending)
    except Lost:
        return replay(rt, ref, TTS)
    except Interrupted:
        return _finish_interrupted(rt, ref, held(pending), published, events)
    audio_id = result.audio_ids[0] if result.audio_ids else None
    tts = {**result.to_doc(), "events": events, "prepared_wait_s": waited}
    return _finish(rt, ref, claim, TurnStatus.DONE, audio_id, tts, t["seconds"], result.provider_seconds)


def _early_speech(rt: Runtime, ref: TurnRef) -> dict[str, Any] | None:
    """The reply the payload carries, when synthesis may start before the claim: no prepared reply to wait for."""
    speech = ref.inputs or {}
    if not isinstance(speech.get("text"), str) or not isinstance(speech.get("project"), str):
        return None
    return speech if not speculative.preparing(rt, ref.turn_id) else None


def _speech_of(turn: Turn | dict[str, Any]) -> dict[str, Any]:
    """The synthesis inputs of an answered turn (what dialog hands on, or what a claimed turn holds)."""
    return {
        "text": turn["reply_text"],
        "voice": turn.get("voice") or None,
        "language": reply_language(turn),
        "provider": turn.get("tts_provider") or None,
        "project": turn["project"],
    }


def _finish_interrupted(
    rt: Runtime, ref: TurnRef, claim: Claim, published: list[ChunkResult], events: list[dict[str, Any]]
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
    claim: Claim,
    status: TurnStatus,
    audio_id: str | None,
    tts: dict[str, Any],
    tts_seconds: float | None,
    engine_seconds: float | None = None,
) -> TurnRef:
    first = (tts.get("events") or [None])[0]
    tts = {**tts, **speculative.settle(rt, ref.turn_id, first)}
    done_at = time.time()
    timings = {
        "timings.tts_queue_s": queue_wait(claim.turn, done_at - (tts_seconds or 0.0)),
        "timings.total_s": round(done_at - float(claim.turn["accepted_at"]), 4),
    }
    if tts_seconds is not None:
        timings["timings.tts_s"] = tts_seconds
    if engine_seconds is not None:  # the voices' own share of tts_s: the rest is the stage around them
        timings["timings.tts_engine_s"] = engine_seconds
    if not claim.finish(rt, ref, status=status.value, audio_id=audio_id, tts=tts, stage_done_at=done_at, **timings):
        return replay(rt, ref, TTS)
    rt.events.publish(
        ref.session_id,
        EventType.DONE,
        ref.turn_id,
        status=status.value,
        timings={k.split(".", 1)[1]: v for k, v in timings.items()},
    )
    metrics.INTERACTIONS.inc()
    return ref.handing_on(skip=status != TurnStatus.DONE)
