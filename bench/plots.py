"""PNG plots of a report: latency histograms, per-stage breakdown, concurrency, cache, idle sockets, soak."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PIPELINE_PARTS = (
    ("upload_s", "upload+enqueue"),
    ("stt_queue_s", "stt queue"),
    ("stt_s", "stt"),
    ("dialog_queue_s", "dialog queue"),
    ("dialog_s", "dialog"),
    ("tts_queue_s", "tts queue"),
    ("tts_s", "tts"),
)
ENGINE_PARTS = (("decode_s", "decode"), ("stt_s", "stt"), ("dialog_s", "dialog"), ("tts_s", "tts"))


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path.name


def latency_histograms(latency: dict, out: Path) -> str:
    """End of speech -> final transcript and -> first audio byte, per mode."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, title in (
        (axes[0], "eos_to_final_s", "end of speech -> final transcript"),
        (axes[1], "eos_to_first_audio_s", "end of speech -> first audio byte"),
    ):
        for mode in latency.get("by_mode", {}):
            values = [
                r[key] for r in latency["runs"] if r["mode"] == mode and r.get(key) is not None and not r.get("split")
            ]
            if values:
                ax.hist(values, bins=min(20, max(3, len(values))), alpha=0.6, label=mode)
        ax.set_title(title)
        ax.set_xlabel("seconds")
        ax.set_ylabel("turns")
        ax.legend()
    return _save(fig, out / "latency_hist.png")


def stage_breakdown(stages: dict, out: Path) -> str:
    """Stacked bars: the pipeline's stages vs the same engines in-process, per utterance."""
    names = list(stages.get("utterances", {}))
    fig, ax = plt.subplots(figsize=(10, 1.2 + 1.1 * max(1, len(names))))
    labels, rows = [], []
    for name in names:
        u = stages["utterances"][name]
        merged = {**u["pipeline_server"], "upload_s": u["pipeline_client"]["upload_s"]}
        rows.append([(label, merged.get(key) or 0) for key, label in PIPELINE_PARTS])
        labels.append(f"{name} pipeline")
        rows.append([(label, u["in_process"].get(key) or 0) for key, label in ENGINE_PARTS])
        labels.append(f"{name} in-process")
    colors = {}
    cmap = plt.get_cmap("tab10")
    for y, row in enumerate(rows):
        left = 0.0
        for label, value in row:
            color = colors.setdefault(label, cmap(len(colors) % 10))
            ax.barh(y, value, left=left, color=color, label=label if y < 2 else None)
            left += value
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("seconds (medians)")
    ax.set_title("one turn: pipeline stages vs engines in-process")
    handles, names_ = ax.get_legend_handles_labels()
    ax.legend(
        dict(zip(names_, handles, strict=True)).values(),
        dict(zip(names_, handles, strict=True)).keys(),
        fontsize=7,
        ncol=8,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.35 / max(1, len(names))),
    )
    return _save(fig, out / "stage_breakdown.png")


def concurrency(conc: dict, out: Path) -> str:
    """Turn latency p50/p95 and turns per minute against concurrent sessions."""
    conc = conc["by_sessions"]
    ns = sorted(conc, key=int)
    xs = list(range(len(ns)))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(xs, [conc[n]["turn_latency_s"]["p50"] for n in ns], "o-", label="turn latency p50")
    ax.plot(xs, [conc[n]["turn_latency_s"]["p95"] for n in ns], "s--", label="turn latency p95")
    ax.set_xticks(xs, ns)
    ax.set_xlabel("concurrent sessions")
    ax.set_ylabel("end of speech -> done (s)")
    ax2 = ax.twinx()
    ax2.bar(xs, [conc[n]["turns_per_minute"] or 0 for n in ns], alpha=0.25, color="gray", width=0.5, label="turns/min")
    ax2.set_ylabel("turns per minute")
    ax.legend(loc="upper left")
    ax.set_title("concurrent WebSocket sessions")
    return _save(fig, out / "concurrency.png")


def cache(cache_result: dict, out: Path) -> str:
    """Time to first audio: cache miss vs hit (service level and end to end), log scale."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    labels, values = [], []
    for level in ("service", "end_to_end"):
        for label in ("miss", "hit"):
            labels.append(f"{level}\n{label}")
            values.append(cache_result[level][label]["p50"] or 0)
    ax.bar(labels, values, color=["tab:red", "tab:green"] * 2)
    ax.set_yscale("log")
    ax.set_ylabel("first audio p50 (s, log)")
    ax.set_title("TTS cache: miss vs hit")
    return _save(fig, out / "cache.png")


def idle(idle_result: dict, out: Path) -> str:
    """API worker RSS before, while holding, and after closing the idle sockets."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    keys = (
        "rss_before_kib",
        "rss_after_kib",
        "rss_after_close_kib",
        "rss_second_round_kib",
        "rss_after_second_close_kib",
    )
    n = idle_result["opened"]
    labels = ["before", f"{n} open", "closed", f"{n} again", "closed again"]
    ax.bar(labels, [(idle_result.get(k) or 0) / 1024 for k in keys])
    ax.set_ylabel("API worker RSS (MiB)")
    ax.set_title(f"idle WebSockets: {idle_result['kib_each']} KiB each")
    return _save(fig, out / "idle_ws.png")


def soak(soak_result: dict, out: Path) -> str:
    """RSS of the API and each worker over the soak."""
    fig, ax = plt.subplots(figsize=(8, 3.6))
    samples = soak_result.get("samples", [])
    for name in soak_result.get("mib_per_min", {}):
        pts = [(s["t"], s[name] / 1024) for s in samples if s.get(name)]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name)
    ax.set_xlabel("seconds")
    ax.set_ylabel("RSS (MiB)")
    ax.set_title(f"soak: {soak_result['sessions']} sessions, {soak_result['seconds']:.0f} s")
    ax.legend(fontsize=8)
    return _save(fig, out / "soak_rss.png")


def draw_all(report: dict, out: Path) -> list[str]:
    """Every plot the report's scenarios allow; returns the file names."""
    scen = report["scenarios"]
    drawn = []
    for key, draw in (
        ("latency", latency_histograms),
        ("stage_breakdown", stage_breakdown),
        ("concurrency", concurrency),
        ("cache", cache),
        ("idle_ws", idle),
        ("soak", soak),
    ):
        if scen.get(key) and "error" not in scen[key]:
            drawn.append(draw(scen[key], out))
    return drawn
