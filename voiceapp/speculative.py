"""Speculative reply (issue 15): at a pause whose words read complete, prepare the reply before the turn ends.

The live STT task offers each speculative transcript (the final-quality decode at a short pause) to a
`Speculation`; one that ends a sentence goes, ids and text only, to `voice.dialog.prepare`, which answers it as the
dialog stage would (same session context) and hands the reply text to `voice.tts.prepare`, which speaks its first
sentence into the audio cache. Neither touches a turn, the unanswered list or the analytics, and neither publishes
an event: if the visitor goes on speaking, nothing of it reaches anyone. When the turn ends with the same words,
its TTS stage finds that sentence in the cache (waiting for a preparation still under way) and records whether the
prepared reply was used or dropped (turn field `tts.prepared`, counter voice_prepared_replies_total).

State of an utterance's preparations, in Redis hash voice:prepared:<turn_id>: field = the speculative transcript,
value = JSON {"state": "dialog" | "tts" | "ready" | "failed", "first": the reply's first sentence}.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import redis

from . import metrics
from .claims import reply_language
from .config import Settings
from .dialog.answer import respond
from .errors import NotFound
from .models import Transcript
from .runtime import Runtime
from .storage import interactions, sessions
from .stt.endpoint import ends_open
from .tts.prepare import first_sentence, prepare_first_sentence
from .turns import TurnRef

log = logging.getLogger(__name__)

PREPARE_DIALOG_TASK = "voice.dialog.prepare"  # routed to the dialog queue by name, like the stages
PREPARE_TTS_TASK = "voice.tts.prepare"  # and this one to the tts queue (synthesis stays on TTS/GPU workers)
MAX_PER_UTTERANCE = 3  # distinct speculative transcripts prepared per utterance (each pause may say more)
KEY_TTL_S = 300  # an utterance that never became a turn leaves nothing behind for long
WAIT_MAX_S = 2.0  # the TTS stage waits at most this for a preparation under way (its worker may have died)
POLL_S = 0.02
PENDING = ("dialog", "tts")
BUSY_QUEUES = ("dialog", "tts")  # Celery's Redis transport keeps each queue as a list of waiting messages


def enabled(settings: Settings) -> bool:
    """Whether replies are prepared at all: with "auto", only when the dialog costs nothing (no LLM call)."""
    mode = settings.speculative_reply
    return mode == "on" or (mode == "auto" and settings.dialog_backend == "extractive")


def _key(turn_id: str) -> str:
    return f"voice:prepared:{turn_id}"


def _mark(rt: Runtime, turn_id: str, text: str, state: str, first: str | None = None) -> None:
    """Record where the preparation of `text` stands."""
    key = _key(turn_id)
    pipe = rt.redis.pipeline()
    pipe.hset(key, text, json.dumps({"state": state, "first": first}))
    pipe.expire(key, KEY_TTL_S)
    pipe.execute()


def _entry(rt: Runtime, turn_id: str, text: str) -> dict[str, Any] | None:
    raw = rt.redis.hget(_key(turn_id), text)
    return json.loads(raw) if raw else None


class Speculation:
    """The live STT task's offers: one preparation per distinct speculative transcript of the utterance."""

    def __init__(self, rt: Runtime, ref: TurnRef, language: str | None) -> None:
        self.rt, self.ref, self.language = rt, ref, language
        self.on = enabled(rt.settings)
        self.offered: list[str] = []

    def offer(self, transcript: Transcript | None) -> None:
        """Prepare the reply to `transcript` unless its words stop mid-phrase or it was prepared already."""
        if not self.on or transcript is None or len(self.offered) >= MAX_PER_UTTERANCE:
            return
        text = transcript.text.strip()
        # Not ends_sentence: Whisper leaves short questions unpunctuated ("is there free wifi in the shop"), and
        # in make bench 2 of 4 hands-free questions were never prepared for want of a question mark.
        if not text or text in self.offered or ends_open(text) or self._behind():
            return
        self.offered.append(text)
        payload = {
            "session_id": self.ref.session_id,
            "turn_id": self.ref.turn_id,
            "text": text,
            "language": self.language,
            "stt_language": transcript.language,
        }
        try:
            _mark(self.rt, self.ref.turn_id, text, "dialog")
            self.rt.celery.send_task(PREPARE_DIALOG_TASK, args=(payload,))
        except Exception as err:  # noqa: BLE001 - an optimisation: the utterance goes on without it
            log.warning("could not prepare a reply for turn %s: %s", self.ref.turn_id, type(err).__name__)
            self._give_up(text)

    def _behind(self) -> bool:
        """Whether turns wait in the dialog or tts queue: a preparation would come late and slow them down more."""
        try:
            pipe = self.rt.redis.pipeline()
            for queue in BUSY_QUEUES:
                pipe.llen(queue)
            return any(int(n) > 0 for n in pipe.execute())
        except Exception:  # noqa: BLE001 - Redis is down: the utterance has other worries
            return True

    def _give_up(self, text: str) -> None:
        try:
            _mark(self.rt, self.ref.turn_id, text, "failed")
        except Exception:  # noqa: BLE001 - Redis is what failed: the TTS stage's wait is bounded anyway
            pass


def prepare_reply(rt: Runtime, payload: Mapping[str, Any]) -> dict[str, Any] | None:
    """The dialog side: answer the speculative words as the turn would; returns what went to voice.tts.prepare."""
    turn_id, text = str(payload["turn_id"]), str(payload["text"])
    try:
        out = _reply(rt, payload)
        if out is None:
            _mark(rt, turn_id, text, "failed")
            return None
        _mark(rt, turn_id, text, "tts", first_sentence(rt.settings, out["reply"]))
        rt.celery.send_task(PREPARE_TTS_TASK, args=(out,))
        return out
    except Exception as err:  # noqa: BLE001 - a preparation never fails anything; the turn answers on its own
        log.warning("reply of turn %s not prepared: %s: %s", turn_id, type(err).__name__, err)
        _mark(rt, turn_id, text, "failed")
        return None


def _reply(rt: Runtime, payload: Mapping[str, Any]) -> dict[str, Any] | None:
    """The reply text and how to speak it, from the session as the turn will copy it; None if the turn ran."""
    session_id, turn_id, text = str(payload["session_id"]), str(payload["turn_id"]), str(payload["text"])
    if _turn_exists(rt, session_id, turn_id):
        return None  # the utterance already ended: its own stages are answering it
    session = sessions.get_session(rt.db, rt.settings, session_id)
    history = interactions.recent_turns(
        rt.db, rt.settings, session_id, rt.settings.dialog_max_context_length, exclude_turn_id=turn_id
    )
    reply = respond(rt.db, rt.settings, session["project"], text, history)
    # The turn the utterance becomes (storage.interactions.create_turn) copies these from the session.
    turn = {"language": session.get("language"), "stt": {"language": payload.get("stt_language")}, "transcript": text}
    return {
        "session_id": session_id,
        "turn_id": turn_id,
        "text": text,
        "reply": reply.text,
        "language": reply_language(turn),
        "voice": session.get("voice") or None,
        "provider": session.get("tts_provider") or None,
        "project": session["project"],
    }


def _turn_exists(rt: Runtime, session_id: str, turn_id: str) -> bool:
    try:
        interactions.get_turn(rt.db, rt.settings, session_id, turn_id)
    except NotFound:
        return False
    return True


def prepare_speech(rt: Runtime, payload: Mapping[str, Any]) -> bool:
    """The TTS side: speak the reply's first sentence into the cache; whether it is there now."""
    turn_id, text = str(payload["turn_id"]), str(payload["text"])
    try:
        prepared = prepare_first_sentence(
            rt.db,
            rt.settings,
            text=str(payload["reply"]),
            voice=payload.get("voice"),
            language=payload.get("language"),
            provider_name=payload.get("provider"),
            project=str(payload["project"]),
            session_id=str(payload["session_id"]),
            paid=rt.settings.speculative_reply == "on",
        )
    except Exception as err:  # noqa: BLE001 - the turn synthesizes on its own (and falls back) if it needs to
        log.warning("first sentence of turn %s not prepared: %s: %s", turn_id, type(err).__name__, err)
        prepared = None
    _mark(rt, turn_id, text, "ready" if prepared else "failed", prepared.sentence if prepared else None)
    return prepared is not None


def preparing(rt: Runtime, turn_id: str) -> bool:
    """Whether replies were prepared for this utterance (True when Redis cannot tell: the careful path)."""
    try:
        return bool(rt.redis.exists(_key(turn_id)))
    except redis.RedisError:
        return True


def await_prepared(rt: Runtime, turn_id: str, transcript: str, reply_text: str) -> float:
    """Before the TTS stage speaks: let a preparation of these very words finish (it started earlier); seconds waited."""
    first = first_sentence(rt.settings, reply_text)
    began = time.monotonic()
    try:
        while time.monotonic() - began < WAIT_MAX_S:
            entry = _entry(rt, turn_id, transcript)
            if entry is None or entry["state"] not in PENDING:
                break
            if entry["state"] == "tts" and entry.get("first") != first:
                break  # it prepares another reply (the context changed meanwhile): nothing to wait for
            time.sleep(POLL_S)
    except redis.RedisError as err:  # the stage speaks on its own; its own Redis needs will tell of an outage
        log.warning("turn %s: could not read its prepared reply: %s", turn_id, type(err).__name__)
    return round(time.monotonic() - began, 4)


def settle(rt: Runtime, turn_id: str, first_chunk: Mapping[str, Any] | None) -> dict[str, str]:
    """After the TTS stage: {"prepared": "used" | "dropped"} when replies were prepared for this utterance, else {}.

    Used = the turn's first sentence came from the cache, where a preparation of this utterance had put it (for
    these words, or for earlier ones with the same first sentence: "Sorry, I don't know that" fits many).
    """
    key = _key(turn_id)
    try:
        entries = [json.loads(v) for v in rt.redis.hvals(key)]
        rt.redis.delete(key)
    except redis.RedisError as err:  # the audio is out: a lost count must not fail the turn
        log.warning("turn %s: could not settle its prepared reply: %s", turn_id, type(err).__name__)
        return {}
    if not entries:
        return {}
    ready = {e.get("first") for e in entries if e.get("state") == "ready"}
    used = first_chunk is not None and bool(first_chunk.get("cached")) and first_chunk.get("text") in ready
    outcome = "used" if used else "dropped"
    metrics.PREPARED_REPLIES.labels(outcome=outcome).inc()
    return {"prepared": outcome}
