"""The benchmark harness runs end to end in quick mode and writes a well-formed report (no timing asserts)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = ("stage_breakdown", "latency", "cache", "concurrency", "talking", "idle_ws", "soak", "russian")
TARGET_KEYS = (
    "overhead_ratio",
    "eos_to_final_p50_s",
    "eos_to_first_audio_p50_s",
    "eos_to_first_audio_p95_s",
    "cache_hit_first_audio_p50_s",
    "idle_ws_per_process",
    "idle_ws_kib_each",
    "lost_events_50_sessions",
    "soak_mib_per_min_per_session",
    "talking_sessions",
)


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    """Run `python -m bench --quick` once into a temp dir."""
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, json.loads((out / "report.json").read_text())


def test_report_has_every_target_key_with_a_number(quick_report):
    _, report = quick_report
    for key in TARGET_KEYS:
        assert isinstance(report[key], (int, float)) and not isinstance(report[key], bool), (key, report[key])
        assert key in report["targets"] and report["targets"][key]["value"] == report[key]
        assert isinstance(report["targets"][key]["met"], bool)
    assert report["cpu_count"] >= 1 and report["meta"]["cpu_count"] == report["cpu_count"]


def test_every_scenario_ran_without_error(quick_report):
    _, report = quick_report
    assert report["meta"]["quick"] is True and report["meta"]["errors"] == []
    for name in SCENARIOS:
        assert name in report["scenarios"] and "error" not in report["scenarios"][name], name


def test_scenarios_measured_real_turns(quick_report):
    _, report = quick_report
    scen = report["scenarios"]
    stage = next(iter(scen["stage_breakdown"]["utterances"].values()))
    assert stage["pipeline_server"]["stt_s"] > 0 and stage["in_process"]["stt_s"] > 0
    assert {"stt_queue_s", "dialog_queue_s", "tts_queue_s", "total_s"} <= set(stage["pipeline_server"])
    # The cache is cleared before each turn: the voice spoke, inside the stage's own time.
    assert 0 < stage["pipeline_server"]["tts_engine_s"] <= stage["pipeline_server"]["tts_s"]
    # The voice's share splits: the reply spoken again in one call and in the stage's chunks, in this process.
    assert stage["in_process"]["tts_again_s"] > 0 and stage["in_process"]["tts_chunked_s"] > 0
    assert isinstance(stage["overhead_s"]["tts_chunks_minus_one_call"], float)
    for mode in ("ptt", "handsfree"):
        assert scen["latency"]["by_mode"][mode]["eos_to_final_s"]["n"] >= 1, mode
    assert all(r["status"] == "done" and r["transcript"] for r in scen["latency"]["runs"])
    for n, result in scen["concurrency"]["by_sessions"].items():
        assert result["turns_done"] == result["turns_expected"], (n, result)
        assert result["lost_events"] == 0 and result["duplicated_events"] == 0, (n, result)
    idle = scen["idle_ws"]
    assert idle["opened"] == idle["requested"] and idle["open_error"] is None
    assert idle["ping_sample_ok"].split("/")[0] == idle["ping_sample_ok"].split("/")[1]
    soak = scen["soak"]
    assert soak["turns_done"] >= 1 and len(soak["samples"]) >= 2
    # Measured, not requested: how long every session kept conversing (each to its last turn past the deadline).
    assert soak["requested_seconds"] <= soak["seconds"] <= soak["requested_seconds"] + 60, soak["seconds"]
    assert scen["cache"]["service"]["hit"]["n"] >= 1 and scen["cache"]["service"]["miss"]["n"] >= 1


def test_markdown_and_plots_are_written(quick_report):
    out, report = quick_report
    text = (out / "report.md").read_text()
    assert report["meta"]["command"] in text and "| `overhead_ratio` |" in text
    assert report["plots"], "no plot drawn"
    for name in report["plots"]:
        png = out / "plots" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"plots/{name}" in text


def test_every_scenario_has_a_section_with_its_figures_in_the_markdown(quick_report):
    out, report = quick_report
    text = (out / "report.md").read_text()
    for name in report["scenarios"]:
        body = text.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0].split("\n![", 1)[0]
        assert any(ch.isdigit() for ch in body), f"section {name} shows no figure: {body!r}"


def test_russian_scenario_scores_a_russian_turn(quick_report):
    _, report = quick_report
    russian = report["scenarios"]["russian"]
    assert russian["turns"] == 1 and russian["answered"] == 1, russian
    assert isinstance(report["ru_wer"], float) and report["ru_wer"] == russian["ru_wer"]
    assert "ru_eos_to_first_audio_p50_s" in report["targets"]
    run = russian["runs"][0]
    assert run["words"] > 0 and run["reference"] and run["transcript"], run


def test_talking_sessions_comes_from_the_conversing_ramp(quick_report):
    out, report = quick_report
    talk = report["scenarios"]["talking"]
    steps = talk["by_sessions"]
    assert next(iter(steps)) == "1" and all(s["turns"] >= 1 for s in steps.values()), steps
    # The headline is the largest N of the ramp that held, and the ramp stops at the first N that did not.
    held = [int(n) for n, s in steps.items() if s["holds"]]
    assert report["talking_sessions"] == talk["talking_sessions"] == max(held, default=0)
    assert all(s["holds"] for s in list(steps.values())[:-1])
    for step in steps.values():
        assert step["holds"] == (step["turns_failed"] == 0 and step["eos_to_first_audio_s"]["p95"] <= 1.5)
        assert step["turns_done"] >= 1 and step["segments_p50_s"]["recognition"] is not None, step
        assert step["lost_events"] == 0 and step["duplicated_events"] == 0, step
    # The diagnosis is computed from this run: it quotes the measured p95 of the step it describes.
    last = steps[str(talk["diagnosis"]["at_sessions"])]
    assert f"{last['eos_to_first_audio_s']['p95']:.2f} s" in talk["diagnosis"]["text"]
    assert f"talking_sessions = {talk['talking_sessions']}" in (out / "report.md").read_text()


def test_each_talking_step_names_its_slowest_turns(quick_report):
    _, report = quick_report
    for step in report["scenarios"]["talking"]["by_sessions"].values():
        slowest = step["slowest"]
        times = [t["eos_to_first_audio_s"] for t in slowest]
        assert 1 <= len(slowest) <= min(5, step["turns_done"]) and times == sorted(times, reverse=True), slowest
        assert times[0] == step["eos_to_first_audio_s"]["max"]
        assert all(isinstance(t["cached"], bool) and t["started_s"] >= 0 for t in slowest), slowest


TAKE = """
import hashlib
from bench import speech
from voiceapp.config import Settings
speech.fix_takes()
print(hashlib.sha256(speech.synthesized(Settings.from_env({}), ("Do you deliver to my office?",))[0].pcm).hexdigest())
"""


def test_every_run_speaks_the_same_takes_of_the_questions():
    takes = [
        subprocess.run([sys.executable, "-c", TAKE], cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
        for _ in range(2)
    ]
    digests = [t.stdout.strip().splitlines()[-1] for t in takes]
    assert len(digests[0]) == 64 and digests[0] == digests[1], [t.stderr[-2000:] for t in takes]
