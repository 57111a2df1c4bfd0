"""The turn's state machine: its statuses, the ordered stage table, and the typed reference tasks pass on."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypedDict


class TurnStatus(StrEnum):
    """Where a turn is; the value is what MongoDB and the API show."""

    QUEUED = "queued"
    STT_RUNNING = "stt-running"
    RECOGNIZED = "recognized"
    DIALOG_RUNNING = "dialog-running"
    ANSWERED = "answered"
    TTS_RUNNING = "tts-running"
    DONE = "done"
    NO_SPEECH = "no_speech"
    INTERRUPTED = "interrupted"
    ERROR = "error"


@dataclass(frozen=True)
class Stage:
    """One stage of a turn: its task, the status it starts from, holds while running, and leaves behind."""

    name: str
    task: str
    ready: TurnStatus
    running: TurnStatus
    done: TurnStatus


STT = Stage("stt", "voice.stt.transcribe", TurnStatus.QUEUED, TurnStatus.STT_RUNNING, TurnStatus.RECOGNIZED)
DIALOG = Stage("dialog", "voice.dialog.respond", TurnStatus.RECOGNIZED, TurnStatus.DIALOG_RUNNING, TurnStatus.ANSWERED)
TTS = Stage("tts", "voice.tts.synthesize", TurnStatus.ANSWERED, TurnStatus.TTS_RUNNING, TurnStatus.DONE)
STAGES: tuple[Stage, ...] = (STT, DIALOG, TTS)
LIVE_STT_TASK = "voice.stt.live"

# A turn in one of these has nothing left to run (the API stops long-polling, the CLI stops waiting).
TERMINAL = frozenset({TurnStatus.DONE, TurnStatus.NO_SPEECH, TurnStatus.INTERRUPTED, TurnStatus.ERROR})
# The main line in order; the off-line terminal statuses come after all of it.
_ORDER = [s for stage in STAGES for s in (stage.ready, stage.running)] + [TurnStatus.DONE]


def position(status: str | None) -> int:
    """Rank of a status along the stage table (terminal statuses rank last)."""
    try:
        return _ORDER.index(TurnStatus(status or ""))
    except ValueError:
        return len(_ORDER)


def remaining_stages(status: str | None) -> tuple[Stage, ...]:
    """The stages an unfinished turn in `status` still has to run (recovery re-enqueues these)."""
    rank = position(status)
    return tuple(stage for stage in STAGES if position(stage.done) > rank)


def is_terminal(status: str | None) -> bool:
    """Whether a turn in `status` is finished."""
    return status in TERMINAL


@dataclass(frozen=True)
class TurnRef:
    """What a task passes to the next stage: the turn's ids, whether the rest of the chain has nothing to do, and
    what the next stage needs to start its engine while it claims the turn (never audio: ids, the reply text).
    """

    session_id: str
    turn_id: str
    skip: bool = False
    mode: str | None = None
    inputs: dict[str, Any] | None = field(default=None, compare=False)

    @classmethod
    def of(cls, value: TurnRef | dict[str, Any]) -> TurnRef:
        """Parse a task payload (a JSON dict) or pass a TurnRef through."""
        if isinstance(value, TurnRef):
            return value
        inputs = value.get("inputs")
        return cls(
            session_id=str(value["session_id"]),
            turn_id=str(value["turn_id"]),
            skip=bool(value.get("skip", False)),
            mode=value.get("mode"),
            inputs=inputs if isinstance(inputs, dict) else None,
        )

    def to_payload(self) -> dict[str, Any]:
        """The JSON task payload (only the fields that say something)."""
        payload: dict[str, Any] = {"session_id": self.session_id, "turn_id": self.turn_id}
        if self.skip:
            payload["skip"] = True
        if self.mode:
            payload["mode"] = self.mode
        if self.inputs:
            payload["inputs"] = self.inputs
        return payload

    def handing_on(self, inputs: dict[str, Any] | None = None, skip: bool = False) -> TurnRef:
        """The ref for the next stage: the same turn, with that stage's inputs (this stage's are dropped)."""
        return TurnRef(self.session_id, self.turn_id, skip=skip, mode=self.mode, inputs=None if skip else inputs)


class Turn(TypedDict, total=False):
    """A turn's document in settings.interactions_collection: the record (tasks pass only a TurnRef)."""

    turn_id: str
    session_id: str
    project: str
    language: str | None
    voice: str | None
    status: str  # a TurnStatus value
    source: str  # http, ws, ws-live
    upload_id: str | None
    accepted_at: float
    audio_seconds: float
    tts_provider: str | None
    transcript: str
    stt: dict[str, Any]  # engine, model, language, confidence
    reply_text: str
    intent: str
    intent_confidence: float
    sources: list[str]
    suggested_actions: list[dict[str, Any]]
    tts: dict[str, Any]  # provider, chunks, audio_ids, events (the audio events sent), cost
    audio_id: str | None
    timings: dict[str, float]  # <stage>_queue_s, <stage>_s, total_s
    error: dict[str, str]  # stage, code, message
    stage_done_at: float
    # The stage claim: who runs the current <stage>-running status, and until when its lease holds.
    claimed_by: str
    claimed_at: float
    claim_until: float
    handed_off: bool  # dialog | synthesis were enqueued after recognition
    timestamp: datetime
    updated_at: datetime


TURN_FIELDS = frozenset(Turn.__annotations__)
