"""report.json (headline keys, targets, every scenario's numbers) and report.md (tables, plots, diagnosis)."""

from __future__ import annotations

import json
import operator
from pathlib import Path
from typing import Any

from .harness import median

# key, comparison, target: the targets, measured and never asserted.
TARGETS = (
    ("overhead_ratio", "<=", 1.10),
    ("eos_to_final_p50_s", "<=", 0.30),
    ("eos_to_first_audio_p50_s", "<=", 0.8),
    ("eos_to_first_audio_p95_s", "<=", 1.5),
    ("cache_hit_first_audio_p50_s", "<=", 0.02),
    ("cache_hit_speedup", ">=", 20),
    ("idle_ws_per_process", ">=", 1000),
    ("idle_ws_kib_each", "<=", 100),
    ("lost_events_50_sessions", "==", 0),
    ("soak_mib_per_min_per_session", "<", 1),
    ("ru_eos_to_first_audio_p50_s", "<=", 0.8),
)
OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, "==": operator.eq}
HEADLINE_KEYS = tuple(t[0] for t in TARGETS) + (
    "eos_to_final_handsfree_p50_s",
    "eos_to_first_audio_handsfree_p50_s",
    "eos_to_first_audio_handsfree_p95_s",
    "cache_miss_first_audio_p50_s",
    "duplicated_events_50_sessions",
    "lost_events_sessions",
    "cpu_count",
    "ru_wer",
)


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def headline(scen: dict) -> dict:
    """The issue's report keys, from the scenarios' results (None where a scenario did not run)."""
    lat, conc = scen.get("latency") or {}, (scen.get("concurrency") or {}).get("by_sessions") or {}
    largest = str(max((int(n) for n in conc), default=0))
    big = conc.get("50") or conc.get(largest) or {}
    return {
        "overhead_ratio": _get(scen, "stage_breakdown", "overhead_ratio"),
        "eos_to_final_p50_s": _get(lat, "by_mode", "ptt", "eos_to_final_s", "p50"),
        "eos_to_first_audio_p50_s": _get(lat, "by_mode", "ptt", "eos_to_first_audio_s", "p50"),
        "eos_to_first_audio_p95_s": _get(lat, "by_mode", "ptt", "eos_to_first_audio_s", "p95"),
        "eos_to_final_handsfree_p50_s": _get(lat, "by_mode", "handsfree", "eos_to_final_s", "p50"),
        "eos_to_first_audio_handsfree_p50_s": _get(lat, "by_mode", "handsfree", "eos_to_first_audio_s", "p50"),
        "eos_to_first_audio_handsfree_p95_s": _get(lat, "by_mode", "handsfree", "eos_to_first_audio_s", "p95"),
        "cache_hit_first_audio_p50_s": _get(scen, "cache", "service", "hit", "p50"),
        "cache_miss_first_audio_p50_s": _get(scen, "cache", "service", "miss", "p50"),
        "cache_hit_speedup": _get(scen, "cache", "service", "speedup"),
        "idle_ws_per_process": _get(scen, "idle_ws", "opened"),
        "idle_ws_kib_each": _get(scen, "idle_ws", "kib_each"),
        "lost_events_50_sessions": big.get("lost_events"),
        "duplicated_events_50_sessions": big.get("duplicated_events"),
        "lost_events_sessions": big.get("sessions"),
        "soak_mib_per_min_per_session": _get(scen, "soak", "mib_per_min_per_session"),
        "ru_wer": _get(scen, "russian", "ru_wer"),
        "ru_eos_to_first_audio_p50_s": _get(scen, "russian", "eos_to_first_audio_s", "p50"),
    }


def evaluate(values: dict) -> dict:
    """key -> {target, value, met} (met is None when not measured)."""
    out = {}
    for key, op, target in TARGETS:
        value = values.get(key)
        out[key] = {
            "target": f"{op} {target}",
            "value": value,
            "met": None if value is None else bool(OPS[op](value, target)),
        }
    return out


# ---------------------------------------------------------------- diagnosis


def _latency_stages(lat: dict, mode: str) -> dict:
    runs = [r for r in lat.get("runs", []) if r["mode"] == mode and r.get("status") == "done" and not r.get("split")]

    def gap(a: str, b: str) -> float | None:
        return median([r[b] - r[a] for r in runs if r.get(a) is not None and r.get(b) is not None])

    return {
        "stt (end of speech -> final transcript)": median([r["eos_to_final_s"] for r in runs]),
        "dialog (final transcript -> reply)": gap("eos_to_final_s", "eos_to_reply_s"),
        "tts (reply -> audio event)": gap("eos_to_reply_s", "eos_to_audio_event_s"),
        "fetch (audio event -> first byte)": gap("eos_to_audio_event_s", "eos_to_first_audio_s"),
    }


def diagnose(report: dict) -> dict:
    """For each missed target: which stage holds the time, and what would close it."""
    scen, targets, notes = report["scenarios"], report["targets"], {}
    if targets["overhead_ratio"]["met"] is False:
        per = _get(scen, "stage_breakdown", "utterances") or {}
        worst = {name: (u["largest_overhead"], u["overhead_s"][u["largest_overhead"]]) for name, u in per.items()}
        notes["overhead_ratio"] = {
            "holds_the_time": worst,
            "fixed_overhead_s": {name: u.get("fixed_overhead_s") for name, u in per.items()},
            "proposal": "The pipeline adds a roughly fixed cost per turn (upload: decode + GridFS store + enqueue; "
            "three queue hops, each re-reading the turn document; the reply's GridFS store), so the "
            "ratio gets worse as the engines get faster. Close it by passing the transcript and reply "
            "text in the task payload instead of re-reading MongoDB at each hop, storing the upload "
            "after enqueueing (or handing PCM over Redis as the live path does), and running dialog "
            "and TTS in one task.",
        }
    lat = scen.get("latency") or {}
    for key, mode in (
        ("eos_to_final_p50_s", "ptt"),
        ("eos_to_first_audio_p50_s", "ptt"),
        ("eos_to_first_audio_p95_s", "ptt"),
    ):
        if targets[key]["met"] is False:
            stages = _latency_stages(lat, mode)
            holder = max(stages, key=lambda k: stages[k] or 0)
            in_proc = _get(scen, "stage_breakdown", "utterances")
            engine_stt = median([u["in_process"]["stt_s"] for u in (in_proc or {}).values()])
            notes[key] = {
                "holds_the_time": holder,
                "stages_p50_s": stages,
                "in_process_stt_s": engine_stt,
                "proposal": (
                    "After `end` the live STT task first catches up with frames it had not yet read (each partial "
                    "re-decodes the whole utterance and blocks reading meanwhile), then decodes the whole "
                    "utterance again for the final (StreamingRecognizer.finish: no speculative result covers "
                    "speech that ended < 0.3 s before `end`). Close it by decoding speculatively at every short "
                    "pause in push-to-talk too and reusing it on `end`, skipping partials while a backlog of "
                    "frames is waiting, and keeping one core for the STT worker (the calibration above shows "
                    "how much of the time is CPU contention)."
                    if holder.startswith("stt")
                    else "Synthesize and publish the first sentence before the rest (TTS_FIRST_CHUNK_CHARS), warm "
                    "the Piper voice at worker start, and serve audio from the cache/GridFS without a "
                    "second round trip (inline small first chunks in the audio event)."
                ),
            }
    if targets["cache_hit_first_audio_p50_s"]["met"] is False or targets["cache_hit_speedup"]["met"] is False:
        notes["cache_hit_first_audio_p50_s"] = {
            "holds_the_time": "cache lookup + GridFS read on the MongoDB-wire emulator (mongoeco, pure Python)",
            "proposal": "Keep a small in-process LRU of hot reply audio ids in the TTS worker, and index the cache "
            "collection by key (a real MongoDB answers these in ~1 ms).",
        }
    if targets["idle_ws_per_process"]["met"] is False or targets["idle_ws_kib_each"]["met"] is False:
        idle = scen.get("idle_ws") or {}
        notes["idle_ws"] = {
            "holds_the_time": idle.get("error") or "memory per connection",
            "proposal": "Each socket costs a receive loop and a relay greenlet that both wake every second; "
            "one hub-fed queue per socket without the 1 s polling would cut CPU and memory.",
        }
    if targets["lost_events_50_sessions"]["met"] is False:
        notes["lost_events_50_sessions"] = {
            "holds_the_time": "see scenarios.concurrency.<N>.errors and timeouts",
            "proposal": "Turns that timed out or failed count their 5 events as lost; check the STT queue depth.",
        }
    conc = _get(scen, "concurrency", "by_sessions") or {}
    if len(conc) > 1:
        ns = sorted(conc, key=int)
        first, last = conc[ns[0]]["turn_latency_s"]["p50"], conc[ns[-1]]["turn_latency_s"]["p50"]
        if first and last and last > 3 * first:
            notes["concurrency"] = {
                "holds_the_time": f"STT queue: turn latency p50 {first:.2f} s at {ns[0]} session(s), "
                f"{last:.2f} s at {ns[-1]}",
                "proposal": "The STT worker runs `--pool solo`: one live utterance at a time, and a live task "
                "lasts as long as the visitor speaks (frames arrive at real-time pace), so speakers "
                "queue behind each other; a task that starts late still emits partials over audio "
                "that is already complete (several whole-utterance decodes instead of one). Run the "
                "live task on a thread/gevent pool (it mostly waits on XREAD) with the decodes "
                "serialised per core, and decode a backlog once.",
            }
    if targets["soak_mib_per_min_per_session"]["met"] is False:
        growth = _get(scen, "soak", "mib_per_min") or {}
        notes["soak_mib_per_min_per_session"] = {
            "holds_the_time": max(growth, key=lambda k: growth[k] or 0) if growth else None,
            "proposal": "Profile that process with tracemalloc across turns; a longer soak "
            "(--soak-seconds 600) separates warm-up and allocator fragmentation from a leak.",
        }
    return notes


# ---------------------------------------------------------------- writing


def write_json(report: dict, out: Path) -> Path:
    """report.json."""
    path = out / "report.json"
    path.write_text(json.dumps(report, indent=1, sort_keys=False, default=str) + "\n")
    return path


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def write_markdown(report: dict, out: Path) -> Path:
    """report.md: the command, the machine, targets, per-scenario numbers, plots, diagnosis."""
    meta, scen = report["meta"], report["scenarios"]
    lines = [
        "# voiceapp benchmark report",
        "",
        f"Command: `{meta['command']}`  ",
        f"When: {meta['started_at']} UTC, {meta['duration_s']:.0f} s; mode: {'quick' if meta['quick'] else 'full'}  ",
        f"Machine: {meta['cpu_count']} CPU cores ({meta['cpu_model']}), {meta['mem_total_mib']} MiB RAM, "
        f"load average at start {meta['load_average_start']}, at end {meta['load_average_end']}  ",
        f"Engines: STT {meta['stt']}, TTS {meta['tts']}; stack started in {meta['stack_startup_s']} s  ",
        f"CPU calibration: tiny.en on jfk.flac in-process took {_fmt(_get(meta, 'calibration', 'stt_jfk_s'))} s "
        f"(idle machine: {_fmt(_get(meta, 'calibration', 'idle_machine_reference_s'))} s, slowdown "
        f"x{_fmt(_get(meta, 'calibration', 'slowdown'))})",
        "",
        "> Other processes on this machine (other engineers' tests) may load the CPU while it measures: medians of "
        "several repetitions are reported; the load average and the calibration above say how busy it was.",
        "",
        "## Targets",
        "",
        "| key | target | measured | met |",
        "|---|---|---|---|",
    ]
    for key, row in report["targets"].items():
        met = {True: "yes", False: "**no**", None: "not measured"}[row["met"]]
        lines.append(f"| `{key}` | {row['target']} | {_fmt(row['value'])} | {met} |")
    extra = {k: report[k] for k in HEADLINE_KEYS if k not in report["targets"]}
    lines += ["", "Also: " + ", ".join(f"`{k}` = {_fmt(v)}" for k, v in extra.items()), ""]
    if report.get("diagnosis"):
        lines += ["## Missed targets: where the time is, what would close it", ""]
        for key, note in report["diagnosis"].items():
            lines.append(f"- **{key}**: held by {json.dumps(note['holds_the_time'], default=str)}. {note['proposal']}")
            if note.get("stages_p50_s"):
                lines.append(
                    "  stages (p50 s): " + ", ".join(f"{k}: {_fmt(v)}" for k, v in note["stages_p50_s"].items())
                )
        lines.append("")
    lines += _scenario_sections(scen)
    for plot in report.get("plots", []):
        lines += [f"![{plot}](plots/{plot})", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _scenario_sections(scen: dict) -> list[str]:
    lines: list[str] = []
    for name, data in scen.items():
        lines += [f"## {name}", ""]
        if not data or "error" in data:
            lines += [f"Did not run: {(data or {}).get('error')}", ""]
            continue
        if name == "stage_breakdown":
            lines += [
                data["method"],
                "",
                "| utterance | pipeline done (s) | in-process engines (s) | ratio | fixed "
                "overhead (s) | stt stage / engine | tts stage / engine | queues | largest overhead |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for utt, u in data["utterances"].items():
                lines.append(
                    f"| {utt} | {_fmt(u['pipeline_client']['e2e_done_s'])} | "
                    f"{_fmt(u['in_process']['engines_total_s'])} | {_fmt(u['overhead_ratio'])} | "
                    f"{_fmt(u.get('fixed_overhead_s'))} | "
                    f"{_fmt(u['pipeline_server']['stt_s'])} / {_fmt(u['in_process']['stt_s'])} | "
                    f"{_fmt(u['pipeline_server']['tts_s'])} / {_fmt(u['in_process']['tts_s'])} | "
                    f"{_fmt(u['overhead_s']['queue_waits'])} | {u['largest_overhead']} |"
                )
        elif name == "latency":
            lines += [
                "Times from the end of speech (computed from the audio with Silero VAD); a negative first-partial "
                "time means the first partial transcript arrived while the visitor was still speaking.",
                "",
                "| mode | first partial p50 | eos->final p50 / p95 | eos->first audio p50 / p95 | n |",
                "|---|---|---|---|---|",
            ]
            for mode, m in data["by_mode"].items():
                lines.append(
                    f"| {mode} | {_fmt(m['eos_to_partial_s']['p50'])} | {_fmt(m['eos_to_final_s']['p50'])} / "
                    f"{_fmt(m['eos_to_final_s']['p95'])} | {_fmt(m['eos_to_first_audio_s']['p50'])} / "
                    f"{_fmt(m['eos_to_first_audio_s']['p95'])} | {m['eos_to_final_s']['n']} |"
                )
            endpointed = [r["endpointed"] for r in data["runs"] if r["mode"] == "handsfree"]
            if endpointed:
                lines.append(
                    f"\nHands-free: the server ended {sum(1 for e in endpointed if e)}/{len(endpointed)} "
                    "utterances by itself (VAD pause); the others were ended by the client after 8 s of silence."
                )
            for mode, m in data["by_mode"].items():
                if m.get("split"):
                    lines.append(
                        f"\n{mode}: {', '.join(m['split'])} answered before the end of speech (the server "
                        "heard a pause longer than its end-of-speech silence inside the speech and ended the "
                        "utterance there); left out of the statistics above."
                    )
        elif name == "cache":
            lines += [data["method"], "", "| level | miss p50 (s) | hit p50 (s) | speedup |", "|---|---|---|---|"]
            for level in ("service", "end_to_end"):
                d = data[level]
                lines.append(f"| {level} | {_fmt(d['miss']['p50'])} | {_fmt(d['hit']['p50'])} | {_fmt(d['speedup'])} |")
            part = data["end_to_end"].get("reply_to_audio_event_s")
            if part:
                lines.append(
                    f"| end_to_end, reply -> audio event only | {_fmt(part['miss']['p50'])} | "
                    f"{_fmt(part['hit']['p50'])} | |"
                )
        elif name == "concurrency":
            lines += [
                data["method"],
                "",
                "| sessions | turns done | latency p50 / p95 (s) | first audio p50 / p95 (s) | turns/min | "
                "lost | duplicated | timeouts |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for n, c in data["by_sessions"].items():
                lines.append(
                    f"| {n} | {c['turns_done']}/{c['turns_expected']} | {_fmt(c['turn_latency_s']['p50'])} / "
                    f"{_fmt(c['turn_latency_s']['p95'])} | {_fmt(c['eos_to_first_audio_s']['p50'])} / "
                    f"{_fmt(c['eos_to_first_audio_s']['p95'])} | {_fmt(c['turns_per_minute'])} | "
                    f"{c['lost_events']} | {c['duplicated_events']} | {c['timeouts']} |"
                )
        elif name == "idle_ws":
            lines.append(", ".join(f"{k}: {_fmt(v)}" for k, v in data.items()))
        elif name == "soak":
            lines += [data["method"], ""]
            lines.append(
                ", ".join(
                    f"{k}: {_fmt(v) if not isinstance(v, dict) else json.dumps(v)}"
                    for k, v in data.items()
                    if k not in ("samples", "method")
                )
            )
        lines.append("")
    return lines
