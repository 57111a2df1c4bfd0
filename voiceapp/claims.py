"""A stage's hold on its turn: the atomic claim, its renewed lease, the one failure path, and the replay.

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
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import redis
from pymongo.errors import PyMongoError

from .dialog.text import language_of
from .errors import NotFound, StorageUnavailable, VoiceError
from .events import EventType
from .runtime import Runtime
from .storage import interactions
from .stt.base import language_code
from .turns import STAGES, Stage, Turn, TurnRef, TurnStatus

log = logging.getLogger(__name__)

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


class Interrupted(Exception):
    """The visitor barged in: stop speaking this reply."""


@dataclass(frozen=True)
class Claim:
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


def claim_stage(rt: Runtime, ref: TurnRef, stage: Stage, wait_missing: float = 0.0) -> Claim | None:
    """Claim `stage` of the turn; None when the turn is past it (or was never meant for it).

    `wait_missing`: seconds to wait for a turn not recorded yet (the API records it right after enqueueing it).
    """
    owner = f"{_HOST}:{uuid.uuid4().hex[:8]}"
    lease = float(rt.settings.task_visibility_timeout)
    deadline = time.monotonic() + wait_missing
    while True:
        turn = interactions.claim_turn(rt.db, rt.settings, ref.turn_id, stage.ready, stage.running, owner, lease)
        if turn is not None:
            return Claim(stage, owner, turn)
        try:
            current = interactions.get_turn(rt.db, rt.settings, ref.session_id, ref.turn_id)
        except NotFound:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.005)
            continue
        status = current.get("status")
        if status == stage.ready:
            continue  # the holder gave it back a moment ago
        if status != stage.running:
            return None
        # Another copy runs it: wait for its result, or for its lease to lapse if its worker died.
        time.sleep(min(0.5, max(0.05, float(current.get("claim_until") or 0) - time.time())))


@contextmanager
def running(rt: Runtime, ref: TurnRef, claim: Claim) -> Iterator[dict[str, float]]:
    """Time a claimed stage and renew its lease; a voice error fails the turn, an outage gives the claim back."""
    with running_early(rt, ref, made(claim)) as timing:
        yield timing


def made(claim: Claim) -> Future[Claim | None]:
    """A claim already made, as the future `running_early` takes."""
    done: Future[Claim | None] = Future()
    done.set_result(claim)
    return done


class Lost(Exception):
    """The claim a stage started its work under went to another copy of the task (or the turn is past it)."""


_CLAIMS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="stage-claim")


def claim_soon(rt: Runtime, ref: TurnRef, stage: Stage, wait_missing: float = 0.0) -> Future[Claim | None]:
    """Claim `stage` in the background, so the stage's engine can start on the inputs its task payload carries."""
    return _CLAIMS.submit(claim_stage, rt, ref, stage, wait_missing)


def held(pending: Future[Claim | None]) -> Claim:
    """The claim once it is made; Lost if another copy holds the stage (its work must not be published)."""
    claim = pending.result()
    if claim is None:
        raise Lost
    return claim


@contextmanager
def running_early(rt: Runtime, ref: TurnRef, pending: Future[Claim | None]) -> Iterator[dict[str, float]]:
    """`running` for a stage whose claim may still be in flight: its failures wait for the claim's outcome."""
    timing: dict[str, float] = {"started": time.time()}
    stop = _renew(rt, ref, pending)
    try:
        yield timing
    except (Interrupted, Lost):
        raise  # an interruption keeps the claim: the stage records what was heard
    except Exception as err:
        claim = pending.result()
        if claim is None:
            raise Lost from err  # not ours: the holder records the outcome
        if isinstance(err, VoiceError) and not isinstance(err, StorageUnavailable):
            fail_turn(rt, ref, claim.stage.name, err.code, err.message)
            raise
        _release(rt, ref, claim)  # an outage or a bug, not a failed turn: the task retries with backoff
        raise
    finally:
        stop.set()
    timing["seconds"] = round(time.time() - timing["started"], 4)


def _release(rt: Runtime, ref: TurnRef, claim: Claim) -> None:
    """Give the stage back (status ready again) so a retry or another copy can take it."""
    stage = claim.stage
    with suppress(PyMongoError):  # MongoDB down: the lease runs out instead
        interactions.release_claim(rt.db, rt.settings, ref.turn_id, stage.running, stage.ready, claim.owner)


def _renew(rt: Runtime, ref: TurnRef, pending: Future[Claim | None]) -> threading.Event:
    """Renew the claim's lease (once it is made) every third of it until the returned event is set."""
    lease = float(rt.settings.task_visibility_timeout)
    stop = threading.Event()

    def run() -> None:
        try:
            claim = pending.result()
        except Exception:  # noqa: BLE001 - the stage itself re-raises the claim's failure
            return
        while claim is not None and not stop.wait(lease / 3):
            try:
                interactions.renew_claim(rt.db, rt.settings, ref.turn_id, claim.stage.running, claim.owner, lease)
            except PyMongoError as err:  # the stage itself will notice the outage
                log.debug("could not renew the claim on turn %s: %s", ref.turn_id, type(err).__name__)

    threading.Thread(target=run, name=f"claim-{ref.turn_id[:8]}", daemon=True).start()
    return stop


def queue_wait(turn: Mapping[str, Any], started: float) -> float:
    """Seconds the turn waited in the stage's queue: from the previous stage's end (or acceptance) to `started`."""
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


def replay(rt: Runtime, ref: TurnRef, upto: Stage) -> TurnRef:
    """Publish again what the turn recorded up to stage `upto` (repeats are dropped by the events' once-keys)."""
    turn = interactions.get_turn(rt.db, rt.settings, ref.session_id, ref.turn_id)
    for stage in STAGES[: STAGES.index(upto) + 1]:
        _REPLAYS[stage.name](rt, ref, turn)
    error = turn.get("error")
    if turn.get("status") == TurnStatus.ERROR and error:
        rt.events.publish(ref.session_id, EventType.ERROR, ref.turn_id, **error)
    return ref.handing_on(skip=turn.get("status") in _SKIP)


def _replay_stt(rt: Runtime, ref: TurnRef, turn: Mapping[str, Any]) -> None:
    if "transcript" in turn:
        publish_transcript(rt, ref, turn["transcript"], turn.get("stt") or {})
    if turn.get("status") == TurnStatus.NO_SPEECH:
        rt.events.publish(ref.session_id, EventType.DONE, ref.turn_id, status=TurnStatus.NO_SPEECH.value)


def _replay_dialog(rt: Runtime, ref: TurnRef, turn: Mapping[str, Any]) -> None:
    if "reply_text" in turn:
        publish_reply(rt, ref, turn)


def _replay_tts(rt: Runtime, ref: TurnRef, turn: Mapping[str, Any]) -> None:
    for data in (turn.get("tts") or {}).get("events") or []:
        rt.events.publish(ref.session_id, EventType.AUDIO, ref.turn_id, **data)
    if turn.get("status") in (TurnStatus.DONE, TurnStatus.INTERRUPTED):
        timings = {k: v for k, v in (turn.get("timings") or {}).items() if k in _DONE_TIMINGS}
        rt.events.publish(ref.session_id, EventType.DONE, ref.turn_id, status=turn["status"], timings=timings)


_REPLAYS = {"stt": _replay_stt, "dialog": _replay_dialog, "tts": _replay_tts}
_DONE_TIMINGS = ("tts_queue_s", "total_s", "tts_s", "tts_engine_s")


def publish_transcript(rt: Runtime, ref: TurnRef, text: str, stt: dict[str, Any]) -> None:
    """Publish the final transcript event."""
    rt.events.publish(
        ref.session_id,
        EventType.TRANSCRIPT,
        ref.turn_id,
        text=text,
        final=True,
        confidence=stt.get("confidence"),
        engine=stt.get("engine"),
    )


def publish_reply(rt: Runtime, ref: TurnRef, turn: Mapping[str, Any]) -> None:
    """Publish the reply event (text, intent, sources, actions, language)."""
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
