"""`python -m bench [--quick] [--out DIR]`: start a private stack, run every scenario, write the report.

Full run (~12 min on 2 cores, up to ~5 of them the talking ramp) writes bench/report.json, bench/report.md
and bench/plots/*.png; --quick (CI, ~1.5 min) runs each scenario at a tiny size to check the harness, never asserting timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from voiceapp.stt.faster_whisper import decode_budget

from . import harness, plots, report, russian, scenarios, speech

SCENARIOS = (
    "stage_breakdown",
    "latency",
    "accuracy",
    "endpointing",
    "cache",
    "concurrency",
    "talking",
    "idle_ws",
    "soak",
    "russian",
)


@dataclass(frozen=True)
class Plan:
    """Sizes of one run."""

    reps: int
    stage_utterances: tuple[str, ...]
    latency_utterances: dict[str, tuple[str, ...]]  # mode -> utterance names (a name twice = two turns)
    cache_reps: int
    cache_e2e_reps: int
    concurrency: tuple[tuple[int, int], ...]  # (sessions, turns each)
    idle: int
    soak_seconds: float
    soak_sessions: int
    paused: int = len(speech.PAUSED)  # sentences with a pause inside (false endpoints)
    talk_ramp: tuple[int, ...] = (1, 2, 4, 6, 8, 10, 12, 16, 20)  # conversing sessions, until p95 first audio > 1.5 s
    talk_seconds: float = 45.0  # per step: enough turns at 10 sessions for a p95 that is not the worst few
    # Fresh Piper takes of each question through the live recognizer in-process, beside the stack's turns: 12
    # turns (~115 words) let one misheard word move pipeline_wer_minus_engine_wer by 0.01.
    accuracy_takes: int = 8


FULL = Plan(
    reps=5,
    stage_utterances=("jfk", "q1"),
    latency_utterances={
        "ptt": ("jfk", "librispeech_left", "librispeech_right", "q2", "q3", "q4", "q5", "jfk"),
        "handsfree": ("jfk", "librispeech_right", "q2", "q3", "q5"),
    },
    cache_reps=5,
    cache_e2e_reps=4,
    concurrency=((1, 2), (5, 1), (20, 1), (50, 1)),
    idle=1000,
    soak_seconds=60,
    soak_sessions=2,
)
QUICK = Plan(
    reps=1,
    stage_utterances=("q1",),
    latency_utterances={"ptt": ("librispeech_right",), "handsfree": ("q2",)},
    cache_reps=1,
    cache_e2e_reps=0,
    concurrency=((2, 1),),
    idle=20,
    soak_seconds=6,
    soak_sessions=1,
    paused=1,
    talk_ramp=(1, 2),
    talk_seconds=8.0,
    accuracy_takes=1,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness runs (CI)")
    parser.add_argument(
        "--out",
        default=str(Path(__file__).resolve().parent),
        help="directory for report.json, report.md and plots/ (default: bench/)",
    )
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument(
        "--reps", type=int, help="repetitions of the stage breakdown and cache runs (default 5, quick 1)"
    )
    parser.add_argument("--sessions", help="concurrency plan, e.g. 1,5,20,50 (one turn each beyond 5)")
    parser.add_argument("--talk-ramp", help="conversing sessions to try, e.g. 1,2,4,6,8,10,12 (stops at a miss)")
    parser.add_argument("--talk-seconds", type=float, help="seconds each talking step lasts (default 45, quick 8)")
    parser.add_argument("--idle", type=int, help="idle WebSockets to open (default 1000, quick 20)")
    parser.add_argument("--soak-seconds", type=float, help="soak duration (default 90, quick 8)")
    parser.add_argument("--soak-sessions", type=int, help="sessions looping during the soak (default 3, quick 1)")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other scenarios of an existing report.json in --out (e.g. `make soak` after `make bench`)",
    )
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    """The base plan with command-line overrides."""
    plan = QUICK if args.quick else FULL
    changes = {}
    if args.reps:
        changes.update(reps=args.reps, cache_reps=args.reps)
    if args.sessions:
        ns = [int(n) for n in args.sessions.split(",") if n.strip()]
        changes["concurrency"] = tuple((n, 2 if n == 1 else 1) for n in ns)
    if args.talk_ramp:
        changes["talk_ramp"] = tuple(int(n) for n in args.talk_ramp.split(",") if n.strip())
    if args.talk_seconds:
        changes["talk_seconds"] = args.talk_seconds
    if args.idle:
        changes["idle"] = args.idle
    if args.soak_seconds:
        changes["soak_seconds"] = args.soak_seconds
    if args.soak_sessions:
        changes["soak_sessions"] = args.soak_sessions
    return Plan(**{**plan.__dict__, **changes})


def _machine() -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    except OSError:
        mem = None
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "mem_total_mib": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _run(name: str, fn: Callable[[], dict], errors: list[str]) -> dict:
    began = time.monotonic()
    print(f"==> {name}", flush=True)
    try:
        result = fn()
    except Exception as err:
        traceback.print_exc()
        errors.append(f"{name}: {err!r}")
        return {"error": repr(err)}
    result["scenario_seconds"] = round(time.monotonic() - began, 1)
    print(f"    {name} done in {result['scenario_seconds']} s", flush=True)
    return result


def run(args: argparse.Namespace) -> int:
    """Start the stack, run the selected scenarios, write the report; 1 when a scenario failed."""
    plan, only = make_plan(args), {s.strip() for s in args.only.split(",")}
    out = Path(args.out).resolve()
    (out / "plots").mkdir(parents=True, exist_ok=True)
    started, began = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), time.monotonic()
    load_start = harness.load_average()
    print("==> starting a private stack (temp home, free ports, memory MongoDB)", flush=True)
    bench = harness.start(ws_max_connections=max(1100, plan.idle + 100))
    errors: list[str] = []
    scen: dict = {}
    calibration: dict = {}
    try:
        settings = bench.settings
        utts = {u.name: u for u in speech.recordings(settings) + speech.synthesized(settings)}
        pick = lambda names: [utts[n] for n in names]  # noqa: E731
        questions = [u for u in utts.values() if u.kind == "synthesized"]
        paused = speech.paused(settings, plan.paused) if "endpointing" in only else []
        more = speech.MORE_TALK_QUESTIONS if "talking" in only else ()
        talk_questions = questions + speech.synthesized(settings, more, prefix="t")
        calibration = scenarios.calibrate(settings, utts["jfk"])
        steps = {
            "stage_breakdown": lambda: scenarios.stage_breakdown(bench, pick(plan.stage_utterances), plan.reps),
            "latency": lambda: scenarios.latency_modes(
                bench, {m: pick(n) for m, n in plan.latency_utterances.items()}, 1
            ),
            "accuracy": lambda: scenarios.accuracy(
                settings, utts, (scen.get("latency") or {}).get("runs") or [], plan.accuracy_takes
            ),
            "endpointing": lambda: scenarios.endpointing(settings, paused, questions[:1] if args.quick else questions),
            "cache": lambda: scenarios.cache_hit_miss(bench, utts["q1"], plan.cache_reps, plan.cache_e2e_reps),
            "concurrency": lambda: scenarios.concurrency(bench, questions, plan.concurrency),
            "talking": lambda: scenarios.talking(bench, talk_questions, plan.talk_ramp, plan.talk_seconds),
            "idle_ws": lambda: scenarios.idle_connections(bench, plan.idle, settle=1.0 if args.quick else 3.0),
            "soak": lambda: scenarios.soak(bench, questions, plan.soak_seconds, plan.soak_sessions),
            "russian": lambda: russian.run(bench, 1 if args.quick else None),  # bench/russian.py (issue 14)
        }
        for name in SCENARIOS:
            if name in only:
                scen[name] = _run(name, steps[name], errors)
    finally:
        harness.stop(bench, keep_home=bool(errors))
        if errors:
            print(f"==> logs of the failed run kept in {bench.home / 'run'}", flush=True)
    argv = sys.argv[1:] if args._argv is None else args._argv
    meta = {
        "command": " ".join(["python -m bench", *(shlex.quote(a) for a in argv)]),
        "quick": bool(args.quick),
        "started_at": started,
        "duration_s": round(time.monotonic() - began, 1),
        "load_average_start": load_start,
        "load_average_end": harness.load_average(),
        "stack_startup_s": bench.startup_s,
        "plan": plan.__dict__,
        "errors": errors,
        "stt": f"{settings.stt_engine} {settings.whisper_model} (threads x decode slots = "
        f"{'x'.join(map(str, decode_budget(settings)))}, final window {settings.whisper_final_window}, "
        f"endpoint {settings.endpoint_mode})",
        "tts": settings.tts_provider,
        "calibration": calibration,
        **_machine(),
    }
    previous = out / "report.json"
    if args.merge and previous.is_file():
        # A separate run (the 20-minute soak) updates its scenarios; the others keep their numbers, and the
        # main run's meta stays the report's meta, with this run's recorded beside it.
        old = json.loads(previous.read_text())
        scen = {**old.get("scenarios", {}), **scen}
        if old.get("meta"):
            merged = {**old["meta"].get("merged", {}), ",".join(sorted(only)): meta}
            meta = {**old["meta"], "merged": merged}
    values = report.headline(scen)
    values["cpu_count"] = meta["cpu_count"]
    full = {**values, "targets": report.evaluate(values), "meta": meta, "scenarios": scen}
    full["diagnosis"] = report.diagnose(full)
    full["plots"] = plots.draw_all(full, out / "plots")
    report.write_json(full, out)
    report.write_markdown(full, out)
    print(f"==> wrote {out / 'report.json'} and {out / 'report.md'}", flush=True)
    for key, row in full["targets"].items():
        print(f"    {key:32} {row['value']!s:>10}  target {row['target']:8} met={row['met']}")
    return 1 if errors else 0


def _terminate(signum, _frame) -> None:
    # SIGTERM (CI timeouts, kill) must still stop the private stack: unwind through run()'s finally.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m bench`."""
    signal.signal(signal.SIGTERM, _terminate)
    speech.fix_takes()
    args = parse_args(argv)
    args._argv = argv
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
