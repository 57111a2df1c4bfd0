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
    ("eos_to_first_audio_p50_s", "<=", 0.50),
    ("eos_to_first_audio_p95_s", "<=", 0.90),
    ("eos_to_first_audio_handsfree_p50_s", "<=", 0.80),
    ("eos_to_first_audio_handsfree_p95_s", "<=", 1.30),
    ("handsfree_false_endpoints", "==", 0),
    ("talking_sessions", ">=", 10),
    ("pipeline_wer_minus_engine_wer", "<=", 0.01),
    ("soak_minutes", ">=", 20),
    ("cache_hit_first_audio_p50_s", "<=", 0.02),
    ("cache_hit_speedup", ">=", 20),
    ("idle_ws_per_process", ">=", 1000),
    ("idle_ws_kib_each", "<=", 100),
    ("lost_events_50_sessions", "==", 0),
    ("soak_mib_per_min_per_session", "<", 1),
    ("ru_eos_to_first_audio_p50_s", "<=", 0.8),
)
OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, "==": operator.eq}
HEADLINE_KEYS = (
    *tuple(t[0] for t in TARGETS),
    "eos_to_final_handsfree_p50_s",
    "pipeline_wer",
    "engine_wer",
    "handsfree_endpoint_delay_p50_s",
    "cache_miss_first_audio_p50_s",
    "duplicated_events_50_sessions",
    "lost_events_sessions",
    "cpu_count",
    "ru_wer",
    "ru_handsfree_false_endpoints",
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
        "ru_handsfree_false_endpoints": _get(scen, "russian", "endpointing", "false_endpoints"),
        "soak_minutes": round(scen["soak"]["seconds"] / 60, 2) if _get(scen, "soak", "seconds") else None,
        "handsfree_false_endpoints": _get(scen, "endpointing", "false_endpoints"),
        "handsfree_endpoint_delay_p50_s": _get(scen, "endpointing", "endpoint_delay_s", "smart", "p50"),
        "pipeline_wer": _get(scen, "accuracy", "pipeline_wer"),
        "engine_wer": _get(scen, "accuracy", "engine_wer"),
        "pipeline_wer_minus_engine_wer": _get(scen, "accuracy", "pipeline_wer_minus_engine_wer"),
        # The conversing loop of scenario "talking" (never the one-shot concurrency burst).
        "talking_sessions": _get(scen, "talking", "talking_sessions"),
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
        notes["overhead_ratio"] = _overhead_note(_get(scen, "stage_breakdown", "utterances") or {})
    lat = scen.get("latency") or {}
    for key, mode in (
        ("eos_to_final_p50_s", "ptt"),
        ("eos_to_first_audio_p50_s", "ptt"),
        ("eos_to_first_audio_p95_s", "ptt"),
        ("eos_to_first_audio_handsfree_p50_s", "handsfree"),
        ("eos_to_first_audio_handsfree_p95_s", "handsfree"),
    ):
        if targets[key]["met"] is False:
            notes[key] = _latency_note(scen, lat, mode, report["meta"])
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
    if targets["talking_sessions"]["met"] is False and _get(scen, "talking", "diagnosis"):
        notes["talking_sessions"] = _talking_note(scen["talking"])
    if targets["handsfree_false_endpoints"]["met"] is False:
        cut = [c for c in _get(scen, "endpointing", "paused") or [] if c["cut"]]
        notes["handsfree_false_endpoints"] = {
            "holds_the_time": "end-of-turn decision at a short pause (voiceapp.stt.endpoint)",
            "proposal": f"{len(cut)} sentence(s) were cut at their inner pause: "
            + "; ".join(f"{c['utterance']} ({c['pause_s']} s pause) -> {c['text']!r}" for c in cut)
            + f". Raise AUDIO_ENDPOINT_COMPLETE (now {_get(scen, 'endpointing', 'settings', 'complete')}) or "
            "AUDIO_ENDPOINT_MIN_SILENCE, or extend the list of words a sentence cannot end on.",
        }
    if targets["pipeline_wer_minus_engine_wer"]["met"] is False:
        acc = scen.get("accuracy") or {}
        worse = [r for r in acc.get("runs", []) if r["pipeline_errors"] > r["engine_errors"]]
        notes["pipeline_wer_minus_engine_wer"] = {
            "holds_the_time": "recognition accuracy (short encoder windows, cut utterances, live audio)",
            "proposal": f"pipeline WER {acc.get('pipeline_wer')} vs stock engine {acc.get('engine_wer')}; turns with "
            "more errors than the stock engine: "
            + (", ".join(f"{r['utterance']} ({r['mode']})" for r in worse) or "none")
            + ". Set WHISPER_FINAL_WINDOW=full to rule out the short window.",
        }
    if targets["ru_eos_to_first_audio_p50_s"]["met"] is False and _get(scen, "russian", "stages_p50_s"):
        notes["ru_eos_to_first_audio_p50_s"] = _russian_note(scen["russian"])
    if targets["soak_minutes"]["met"] is False:
        notes["soak_minutes"] = {
            "holds_the_time": f"the soak ran {report.get('soak_minutes')} min",
            "proposal": "`make soak` (20 min, separate from `make bench`) measures memory growth over a meaningful "
            "time; within a few minutes the workers' per-turn RSS swings hide any slope.",
        }
    if targets["soak_mib_per_min_per_session"]["met"] is False:
        growth = _get(scen, "soak", "mib_per_min") or {}
        notes["soak_mib_per_min_per_session"] = {
            "holds_the_time": max(growth, key=lambda k: growth[k] or 0) if growth else None,
            "proposal": "Profile that process with tracemalloc across turns; a longer soak "
            "(--soak-seconds 600) separates warm-up and allocator fragmentation from a leak.",
        }
    return notes


# What would cut each part of the pipeline's overhead (bench/scenarios._overheads names them).
OVERHEAD_FIXES = {
    "upload_until_accepted": "the request until the API accepts the turn (HTTP, session check, decode; the turn's "
    "record and GridFS copy follow the enqueue, off the path)",
    "queue_waits": "queue hops between stages (from a stage's end, before its MongoDB record, to the next one's "
    "start: that record, Celery's delivery, and the dialog stage's claim; a busy worker adds its backlog)",
    "stt_stage_minus_engine": "the STT stage around its engine (Redis hand-over read, claim made meanwhile, and the "
    "cores the API's GridFS copy of the upload shares with it)",
    "dialog_stage_minus_engine": "the dialog stage around its engine (claim, history read, record)",
    "tts_chunks_minus_one_call": "the voice spoken in one call per chunk instead of one per reply, alone in the "
    "bench process (the price of the first clause's audio coming early)",
    "tts_engine_in_stack_minus_in_process": "the voice's calls per chunk, slower in the stack than the same calls "
    "alone in the bench process (the two cores are shared with the API, the MongoDB-wire server and the other "
    "workers while the first chunk's audio is stored and fetched)",
    "tts_stage_minus_its_engine": "the TTS stage around its own voice calls (cache lookups, GridFS store, one "
    "update per chunk)",
    "pubsub_delivery": "event delivery (Redis pub/sub -> hub -> socket)",
    "after_the_stages": "the server's time outside the stages and queue waits (the turn's final record after the "
    "last chunk; negative when a stage started before its queue wait ended)",
}


def _overhead_note(per: dict) -> dict:
    """The overhead parts of this run, largest first (median over utterances), and what would cut the largest."""
    parts = {key: median([(u.get("overhead_s") or {}).get(key) for u in per.values()]) for key in OVERHEAD_FIXES}
    ranked = sorted((k for k in parts if parts[k] is not None), key=lambda k: -(parts[k] or 0.0))
    fixed = median([u.get("fixed_overhead_s") for u in per.values()])
    ratios = {name: u.get("overhead_ratio") for name, u in per.items()}
    if not ranked:
        return {"holds_the_time": None, "proposal": "no stage breakdown ran"}
    top = ranked[0]
    listing = "; ".join(f"{k} {parts[k]:.3f} s" for k in ranked[:4])
    text = (
        f"Pipeline / engine ratios {ratios}; the pipeline adds {fixed} s per turn (median). Largest parts: "
        f"{listing}. The largest is {OVERHEAD_FIXES[top]}."
    )
    return {"holds_the_time": top, "overhead_s": parts, "fixed_overhead_s": fixed, "proposal": text}


def _latency_note(scen: dict, lat: dict, mode: str, meta: dict) -> dict:
    """Which stage holds a latency target's time, in this run's numbers."""
    stages = _latency_stages(lat, mode)
    holder = max(stages, key=lambda k: stages[k] or 0)
    in_proc = _get(scen, "stage_breakdown", "utterances") or {}
    engine_stt = median([u["in_process"]["stt_s"] for u in in_proc.values()])
    parts = [f"{k}: {v:.3f} s" for k, v in stages.items() if v is not None]
    text = f"{mode}: the largest share is {holder} ({'; '.join(parts)})."
    if engine_stt is not None:
        text += f" The same model in-process took {engine_stt:.3f} s per whole utterance."
    slowdown = _get(meta, "calibration", "slowdown")
    if slowdown and slowdown > 1.3:
        text += (
            f" The CPU was loaded during the run (calibration slowdown x{slowdown}): CPU-bound stages scale with it."
        )
    prepared = _get(lat, "by_mode", mode, "prepared")
    if prepared:
        text += (
            f" Replies prepared at a pause (SPECULATIVE_REPLY): {prepared.get('used', 0)} turns spoke the first "
            f"sentence from them, {prepared.get('dropped', 0)} dropped them."
        )
    if mode == "handsfree":
        delay = _get(scen, "endpointing", "endpoint_delay_s")
        if delay:
            text += (
                f" Endpoint delay (end of speech -> final, by audio position): smart "
                f"{_get(delay, 'smart', 'p50')} s p50, silence rule {_get(delay, 'silence', 'p50')} s p50."
            )
    return {"holds_the_time": holder, "stages_p50_s": stages, "in_process_stt_s": engine_stt, "proposal": text}


def _talking_note(talk: dict) -> dict:
    """The talking scenario's own diagnosis (computed from its steps), with the p95 of each step."""
    rows = {
        n: {
            "eos_to_first_audio_p95_s": _get(step, "eos_to_first_audio_s", "p95"),
            "turns_done": f"{step.get('turns_done')}/{step.get('turns')}",
        }
        for n, step in talk.get("by_sessions", {}).items()
    }
    diagnosis = talk["diagnosis"]
    return {"holds_the_time": diagnosis.get("holds_the_time"), "by_sessions": rows, "proposal": diagnosis["text"]}


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
                "overhead (s) | stt stage / engine | tts stage / its engine / engine alone | queues | largest overhead |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for utt, u in data["utterances"].items():
                lines.append(
                    f"| {utt} | {_fmt(u['pipeline_client']['e2e_done_s'])} | "
                    f"{_fmt(u['in_process']['engines_total_s'])} | {_fmt(u['overhead_ratio'])} | "
                    f"{_fmt(u.get('fixed_overhead_s'))} | "
                    f"{_fmt(u['pipeline_server']['stt_s'])} / {_fmt(u['in_process']['stt_s'])} | "
                    f"{_fmt(u['pipeline_server']['tts_s'])} / {_fmt(u['pipeline_server'].get('tts_engine_s'))} / "
                    f"{_fmt(u['in_process']['tts_s'])} | "
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
        elif name == "talking":
            lines += _talking_lines(data)
        elif name in _SECTION_LINES:
            lines += _SECTION_LINES[name](data)
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


def _talking_lines(data: dict) -> list[str]:
    """The conversing ramp: one row per number of sessions, then the computed diagnosis."""
    segments = ("recognition", "dialog_queue", "dialog", "handoff", "tts_queue", "first_sentence", "fetch")
    lines = [
        data["method"],
        "",
        f"**talking_sessions = {data['talking_sessions']}**",
        "",
        "| sessions | turns done | first audio p50 / p95 (s) | final p50 / p95 (s) | "
        + " | ".join(f"{k} p50/p95" for k in segments)
        + " | cache hits | held |",
        "|---|---|---|---|" + "---|" * len(segments) + "---|---|",
    ]
    for n, step in data["by_sessions"].items():
        cells = [f"{_fmt(step['segments_p50_s'].get(k))} / {_fmt(step['segments_p95_s'].get(k))}" for k in segments]
        lines.append(
            f"| {n} | {step['turns_done']}/{step['turns']} | {_fmt(step['eos_to_first_audio_s']['p50'])} / "
            f"{_fmt(step['eos_to_first_audio_s']['p95'])} | {_fmt(step['eos_to_final_s']['p50'])} / "
            f"{_fmt(step['eos_to_final_s']['p95'])} | " + " | ".join(cells) + f" | {_fmt(step['cache_hit_share'])} | "
            f"{'yes' if step['holds'] else '**no**'} |"
        )
    return [*lines, "", f"Diagnosis: {data['diagnosis']['text']}"]


def _accuracy_lines(data: dict) -> list[str]:
    """WER of the pipeline's finals against the stock engine's, overall and by source, then per utterance."""
    lines = [data["method"], "", "| source | words | pipeline WER | engine WER | difference |", "|---|---|---|---|---|"]
    for label, part in (
        ("all", data),
        ("stack turns", data["stack_turns"]),
        ("recognizer takes", data["recognizer_takes"]),
    ):
        lines.append(
            f"| {label} | {part['words']} | {_fmt(part['pipeline_wer'])} | {_fmt(part['engine_wer'])} | "
            f"{_fmt(part['pipeline_wer_minus_engine_wer'])} |"
        )
    wrong = [r for r in data["runs"] if r["pipeline_errors"] or r["engine_errors"]]
    lines += [
        "",
        "Runs with a word error (pipeline / engine errors): "
        + (
            ", ".join(f"{r['utterance']} {r['mode']} {r['pipeline_errors']}/{r['engine_errors']}" for r in wrong)
            or "none"
        )
        + ".",
    ]
    return lines


def _endpoint_lines(data: dict, prefix: str = "") -> list[str]:
    """Paused utterances: whether the endpoint cut them, the turn model's scores, and the endpoint delay."""
    lines = [
        f"{prefix}false endpoints: {data['false_endpoints']} of {data['utterances']} utterances",
        "",
        "| utterance | pause (s) | cut | WER | end-of-turn scores | text |",
        "|---|---|---|---|---|---|",
    ]
    for u in data["paused"]:
        scores = ", ".join(f"{p:.2f}" for p in u.get("turn_probabilities") or [])
        lines.append(
            f"| {u['utterance']} | {u['pause_s']} | {'**yes**' if u['cut'] else 'no'} | {_fmt(u['wer'])} | "
            f"{scores} | {u['text']} |"
        )
    for mode, delay in (data.get("endpoint_delay_s") or {}).items():
        lines.append(
            f"\nEndpoint delay ({mode}): p50 {_fmt(delay['p50'])} s, p95 {_fmt(delay['p95'])} s, n {delay['n']}."
        )
    return lines


def _endpointing_lines(data: dict) -> list[str]:
    """The hands-free endpointing scenario: its method, settings and the paused utterances."""
    return [data["method"], "", f"Settings: {json.dumps(data.get('settings'))}", "", *_endpoint_lines(data)]


def _russian_lines(data: dict) -> list[str]:
    """The Russian turns: timing by part, each turn's transcript, and the Russian paused utterances."""
    lines = [
        f"WER {_fmt(data['ru_wer'])}; answered {data['answered']}/{data['turns']}; end of speech -> final p50 / p95 "
        f"{_fmt(data['eos_to_final_s']['p50'])} / {_fmt(data['eos_to_final_s']['p95'])} s; -> first audio p50 / p95 "
        f"{_fmt(data['eos_to_first_audio_s']['p50'])} / {_fmt(data['eos_to_first_audio_s']['p95'])} s.",
        "",
        "Medians by part (s): " + ", ".join(f"{k} {_fmt(v)}" for k, v in data["stages_p50_s"].items()) + ".",
        "",
        "| utterance | mode | transcript | final (s) | first audio (s) |",
        "|---|---|---|---|---|",
    ]
    for r in data["runs"]:
        lines.append(
            f"| {r['utterance']} | {r['mode']} | {r.get('transcript')} | {_fmt(r.get('eos_to_final_s'))} | "
            f"{_fmt(r.get('eos_to_first_audio_s'))} |"
        )
    if data.get("endpointing"):
        lines += ["", *_endpoint_lines(data["endpointing"], prefix="Russian hands-free: ")]
    return lines


def _dialog_eval_lines(data: dict) -> list[str]:
    """Answer and refusal accuracy of the dialog stage, per part and category."""
    parts = {k: v for k, v in data.items() if isinstance(v, dict) and "answer_accuracy" in v}
    llm = data.get("llm_fake_echo") or {}
    parts |= {f"llm fake, {k}": v for k, v in llm.items() if isinstance(v, dict) and "answer_accuracy" in v}
    lines = [
        f"{data['split']} ({data['when']}).",
        "",
        "| part | questions | answer accuracy | refusal accuracy | refusal precision / recall | dialog p50 / p95 (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for name, part in parts.items():
        lines.append(
            f"| {name} | {part['questions']} | {_fmt(part['answer_accuracy'])} | {_fmt(part['refusal_accuracy'])} | "
            f"{_fmt(part['refusal_precision'])} / {_fmt(part['refusal_recall'])} | {_fmt(part['dialog_p50_ms'])} / "
            f"{_fmt(part['dialog_p95_ms'])} |"
        )
    for name in ("heldout", "tune"):
        by = data[name]["by_category"]
        lines.append(f"\n{name} by category: " + ", ".join(f"{k} {c['right']}/{c['n']}" for k, c in by.items()) + ".")
    return lines


_SECTION_LINES = {
    "accuracy": _accuracy_lines,
    "endpointing": _endpointing_lines,
    "russian": _russian_lines,
    "dialog_eval": _dialog_eval_lines,
}


# What each part of a Russian turn's end of speech -> first audio is (bench/russian.py names them).
RUSSIAN_PARTS = {
    "draft_in_flight": "a partial (draft) decode still running when the visitor released: the final waits for it",
    "final_decode": "the final decode of multilingual Whisper base (beam 5 in the clip + 3 s window)",
    "dialog": "the dialog stage (queue hop, retrieval, reply)",
    "tts_first_sentence": "festival's first sentence (queue hop, synthesis, store)",
    "fetch": "the client's fetch of the first audio",
}


def _russian_note(ru: dict) -> dict:
    """The Russian turn's largest part, from the run's per-stage medians."""
    parts = {k: v for k, v in (ru.get("stages_p50_s") or {}).items() if v is not None}
    held = max(parts, key=lambda k: parts[k])
    order = "; ".join(f"{k} {parts[k]:.3f} s" for k in sorted(parts, key=lambda k: -parts[k]))
    return {
        "holds_the_time": held,
        "proposal": f"Russian end of speech -> first audio p50 {_get(ru, 'eos_to_first_audio_s', 'p50')} s over "
        f"{ru.get('turns')} turns; medians by part: {order}. The largest is {RUSSIAN_PARTS.get(held, held)}.",
    }
