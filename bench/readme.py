"""`python -m bench.readme`: write bench/report.json's figures into README.md, between two markers.

Every figure and every diagnosis sentence of the README's benchmark section comes from the committed report
(the run that wrote it): `make bench`, `make eval` and `make soak` call this after writing the report, and
tests/test_bench_readme.py fails when the README and the report disagree.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .report import OPS

ROOT = Path(__file__).resolve().parent.parent
START = "<!-- bench-figures:start (written by `python -m bench.readme` from bench/report.json; do not edit) -->"
END = "<!-- bench-figures:end -->"

# key -> what it measures, in the README's words.
WHAT = {
    "overhead_ratio": "pipeline turn time / same engines in-process (HTTP upload path, same audio)",
    "eos_to_final_p50_s": "end of speech -> final transcript, push-to-talk, p50 (s)",
    "eos_to_first_audio_p50_s": "end of speech -> first reply audio byte at the client, push-to-talk, p50 (s)",
    "eos_to_first_audio_p95_s": "... push-to-talk, p95 (s)",
    "eos_to_first_audio_handsfree_p50_s": "end of speech -> first reply audio byte, hands-free, p50 (s)",
    "eos_to_first_audio_handsfree_p95_s": "... hands-free, p95 (s)",
    "handsfree_false_endpoints": "hands-free utterances with pauses inside, cut before their end",
    "talking_sessions": "most conversing sessions with p95 end of speech -> first audio <= 1.5 s",
    "pipeline_wer_minus_engine_wer": "pipeline WER minus the stock full-window engine's WER, same audio",
    "soak_minutes": "soak duration (min)",
    "soak_mib_per_min_per_session": "RSS growth per minute per session over the soak (MiB)",
    "cache_hit_first_audio_p50_s": "TTS cache hit: time to first audio, p50 (s)",
    "cache_hit_speedup": "cache miss / hit time to first audio",
    "idle_ws_per_process": "idle WebSockets held by one API process",
    "idle_ws_kib_each": "API memory per idle WebSocket (KiB)",
    "lost_events_50_sessions": "lost events, 50 concurrent sessions",
    "ru_eos_to_first_audio_p50_s": "Russian: end of speech -> first reply audio, p50 (s)",
    "answer_accuracy": "held-out answerable questions answered from the right passage (`make eval`)",
    "refusal_accuracy": "held-out answer-or-refuse decisions right (`make eval`)",
    "dialog_p50_ms": "dialog stage p50 on the evaluation set (ms)",
}
EVAL_TARGETS = {"answer_accuracy": ">= 0.9", "refusal_accuracy": ">= 0.95", "dialog_p50_ms": "<= 30"}
ALSO = (
    "eos_to_final_handsfree_p50_s",
    "handsfree_endpoint_delay_p50_s",
    "pipeline_wer",
    "engine_wer",
    "ru_wer",
    "cache_miss_first_audio_p50_s",
    "duplicated_events_50_sessions",
    "dialog_cpu_p50_ms",
    "llm_answer_accuracy",
    "llm_refusal_accuracy",
)


def _fmt(value: Any) -> str:
    """A figure as the report holds it, shortened to three decimals."""
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:.0f}"
    return "not measured" if value is None else str(value)


def _met(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "not measured"}[met]


def _meta_lines(report: dict) -> list[str]:
    """When, where and how busy: from the report's meta."""
    meta = report.get("meta") or {}
    cal = meta.get("calibration") or {}
    load = meta.get("load_average_start"), meta.get("load_average_end")
    lines = [
        f"`{meta.get('command', 'python -m bench')}`, {meta.get('started_at', '?')} UTC, {meta.get('duration_s', '?')} s; "
        f"{meta.get('cpu_count', '?')} CPU cores ({meta.get('cpu_model', '?')}), Python {meta.get('python', '?')}.",
        f"Engines: STT {meta.get('stt', '?')}; TTS {meta.get('tts', '?')}.",
    ]
    if cal:
        lines.append(
            f"CPU calibration: tiny.en on jfk.flac in-process took {cal.get('stt_jfk_s')} s during the run "
            f"(reference idle machine {cal.get('idle_machine_reference_s')} s: slowdown x{cal.get('slowdown')}); "
            f"load average {load[0]} at the start, {load[1]} at the end."
        )
    soak = (report.get("scenarios") or {}).get("soak") or {}
    if soak.get("seconds"):
        lines.append(
            f"Soak: {round(soak['seconds'] / 60, 1)} min, {soak.get('sessions')} sessions, "
            f"{soak.get('turns_done')} turns done, {soak.get('turns_failed')} failed "
            f"(`make soak` merges its own run into the same report)."
        )
    for names, run in (meta.get("merged") or {}).items():
        slowdown = (run.get("calibration") or {}).get("slowdown")
        lines.append(
            f"Merged run ({names}): `{run.get('command')}`, {run.get('started_at')} UTC, {run.get('duration_s')} s, "
            f"calibration slowdown x{slowdown}."
        )
    return lines


def _targets_table(report: dict) -> list[str]:
    rows = ["| what | key | measured | target | met |", "|---|---|---|---|---|"]
    for key, t in (report.get("targets") or {}).items():
        rows.append(
            f"| {WHAT.get(key, key)} | `{key}` | {_fmt(t.get('value'))} | {t.get('target')} | {_met(t.get('met'))} |"
        )
    for key, target in EVAL_TARGETS.items():
        if key in report:
            rows.append(
                f"| {WHAT[key]} | `{key}` | {_fmt(report[key])} | {target} | {_met(_eval_met(key, report[key]))} |"
            )
    return rows


def _eval_met(key: str, value: Any) -> bool | None:
    if value is None:
        return None
    op, target = EVAL_TARGETS[key].split()
    return bool(OPS[op](value, float(target)))


def _diagnosis(report: dict) -> list[str]:
    """The report's own diagnosis of each missed target, one bullet each."""
    out = []
    for key, note in (report.get("diagnosis") or {}).items():
        if not isinstance(note, dict):
            continue
        held = note.get("holds_the_time")
        held_text = json.dumps(held, ensure_ascii=False) if not isinstance(held, str) else held
        bullet = f"- **{key}**: held by {held_text}."
        if note.get("proposal"):
            bullet += f" {note['proposal']}"
        out.append(bullet)
    return out


def render(report: dict) -> str:
    """The README section's body, from a report.json."""
    also = [f"`{k}` = {_fmt(report.get(k))}" for k in ALSO if k in report]
    parts = [*_meta_lines(report), "", *_targets_table(report), ""]
    if also:
        parts += ["Also: " + ", ".join(also) + ".", ""]
    diag = _diagnosis(report)
    if diag:
        parts += [
            "Where each missed target spends its time (the report's diagnosis, computed from the run):",
            "",
            *diag,
            "",
        ]
    parts.append("Every scenario's tables and plots: [bench/report.md](bench/report.md).")
    return "\n".join(parts)


def update(readme: str, report: dict) -> str:
    """README text with the section between the markers replaced by the report's figures."""
    head, sep, rest = readme.partition(START)
    if not sep or END not in rest:
        raise ValueError("README.md lacks the bench-figures markers")
    tail = rest.split(END, 1)[1]
    return f"{head}{START}\n{render(report)}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.readme", description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=ROOT / "bench" / "report.json")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if the README disagrees with the report")
    args = parser.parse_args(argv)
    readme = args.readme.read_text(encoding="utf-8")
    new = update(readme, json.loads(args.report.read_text(encoding="utf-8")))
    if args.check:
        if new != readme:
            print(f"{args.readme} disagrees with {args.report}: run python -m bench.readme", file=sys.stderr)
            return 1
        return 0
    if new != readme:
        args.readme.write_text(new, encoding="utf-8")
        print(f"==> wrote {args.report.name}'s figures into {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
