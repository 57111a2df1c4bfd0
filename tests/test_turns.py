"""The named turn state machine (unit: no processes): one stage table used by the pipeline, recovery, API and CLI."""

from __future__ import annotations

from concurrent.futures import Future
from importlib import resources
from types import SimpleNamespace

import pytest
import yaml

from tasks import recovery
from voiceapp import cli, pipeline
from voiceapp.claims import Lost, held, running_early
from voiceapp.config import Settings
from voiceapp.errors import TtsError
from voiceapp.turns import DIALOG, STAGES, STT, TERMINAL, TTS, TurnRef, TurnStatus, is_terminal, remaining_stages
from voiceapp.web import api


def test_the_stage_table_chains_each_stage_from_the_status_the_previous_one_leaves():
    assert [s.name for s in STAGES] == ["stt", "dialog", "tts"]
    assert STT.done == DIALOG.ready and DIALOG.done == TTS.ready and TTS.done == TurnStatus.DONE
    assert pipeline.STAGE_TASKS == ("voice.stt.transcribe", "voice.dialog.respond", "voice.tts.synthesize")


def test_recovery_resumes_an_unfinished_turn_from_the_stage_it_stopped_at():
    assert remaining_stages(TurnStatus.QUEUED) == STAGES
    assert remaining_stages(TurnStatus.STT_RUNNING) == STAGES  # a claim whose worker died
    assert remaining_stages(TurnStatus.RECOGNIZED) == (DIALOG, TTS)
    assert remaining_stages(TurnStatus.DIALOG_RUNNING) == (DIALOG, TTS)
    assert remaining_stages(TurnStatus.TTS_RUNNING) == (TTS,)
    assert all(remaining_stages(status) == () for status in TERMINAL)
    assert set(recovery.UNFINISHED) == {s.value for s in TurnStatus} - {s.value for s in TERMINAL}


def test_the_api_and_cli_stop_waiting_on_the_same_terminal_statuses():
    assert api.TERMINAL is TERMINAL and TurnStatus.INTERRUPTED in TERMINAL
    assert cli.is_terminal is is_terminal
    assert not is_terminal("tts-running") and is_terminal("no_speech")


def test_every_status_is_documented_in_the_openapi_schema():
    document = yaml.safe_load(resources.files("voiceapp.web").joinpath("openapi.yaml").read_text())
    schema = document["components"]["schemas"]
    statuses = [p.get("properties", {}).get("status", {}) for p in schema.values()]
    enums = [s["enum"] for s in statuses if "enum" in s]
    assert any({s.value for s in TurnStatus} <= set(enum) for enum in enums)


def test_a_turn_ref_round_trips_through_its_json_payload():
    ref = TurnRef(session_id="s" * 32, turn_id="t" * 32, mode="push_to_talk")
    assert TurnRef.of(ref.to_payload()) == ref
    assert TurnRef.of({"session_id": "a", "turn_id": "b", "skip": True}).skip
    assert ref.to_payload() == {"session_id": "s" * 32, "turn_id": "t" * 32, "mode": "push_to_talk"}


def test_a_stage_s_inputs_travel_in_the_payload_to_that_stage_only():
    ref = TurnRef(session_id="s" * 32, turn_id="t" * 32, inputs={"upload_id": "u" * 24, "language": "en-US"})
    assert TurnRef.of(ref.to_payload()).inputs == {"upload_id": "u" * 24, "language": "en-US"}
    assert ref.handing_on().to_payload() == {"session_id": "s" * 32, "turn_id": "t" * 32}  # not to the next stage
    assert ref.handing_on(inputs={"text": "Hi."}).inputs == {"text": "Hi."}
    assert ref.handing_on(inputs={"text": "Hi."}, skip=True).inputs is None  # a skipped stage needs nothing
    assert TurnRef.of({"session_id": "a", "turn_id": "b", "inputs": "not a mapping"}).inputs is None


def test_work_done_under_a_claim_another_copy_won_is_dropped_and_fails_nothing():
    lost: Future = Future()
    lost.set_result(None)  # claim_stage found the turn held by another copy (or past this stage)
    rt = SimpleNamespace(settings=Settings.from_env({}))  # no stores: failing the turn would need them
    ref = TurnRef(session_id="s" * 32, turn_id="t" * 32)
    with pytest.raises(Lost), running_early(rt, ref, lost):
        raise TtsError("the voice failed")  # not this copy's turn to fail
    with pytest.raises(Lost):
        held(lost)
