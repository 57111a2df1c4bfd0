"""Russian turns through the whole stack (issue 14): `ru_wer` and `ru_eos_to_first_audio_p50_s`.

The Russian recordings of tests/data/ru (festival's Russian voice, with transcripts) are streamed at
real-time pace over the WebSocket, push-to-talk, to a project with the Russian demo knowledge base and
language ru: recognition by multilingual Whisper base, the reply spoken by festival (or the browser provider
where festival is not installed). One unmeasured turn first loads base and starts festival in the workers.
Run it alone: `python -m bench --only russian --out /tmp/bench-ru`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import requests

from voiceapp.audio import decode
from voiceapp.config import Settings
from voiceapp.stt.wer import word_errors

from . import harness
from .client import LiveClient, check_events
from .scenarios import clear_tts_cache
from .speech import Utterance, _utterance

RU_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "ru"
PROJECT = "bench-ru"


def recordings(settings: Settings, count: int | None = None) -> list[tuple[Utterance, str]]:
    """(utterance, reference transcript) for each Russian recording (the first `count` of them)."""
    transcripts: dict[str, str] = json.loads((RU_DIR / "transcripts.json").read_text(encoding="utf-8"))
    out = []
    for name, text in list(transcripts.items())[:count]:
        samples = decode((RU_DIR / name).read_bytes(), settings).samples
        out.append((_utterance(f"ru_{Path(name).stem}", "recording_ru", samples), text))
    return out


def _project(bench: harness.BenchStack) -> str:
    """Create the Russian project on the bench stack (kb_ru, language ru); returns its key."""
    from voiceapp.demo import KB_RU_DIR
    from voiceapp.dialog.knowledge import load_directory
    from voiceapp.storage.projects import create_key

    load_directory(bench.db, bench.settings, PROJECT, KB_RU_DIR)
    return create_key(bench.db, bench.settings, PROJECT, language="ru")


def _session(bench: harness.BenchStack, key: str) -> dict:
    response = requests.post(
        f"{bench.base_url}/api/v1/voice/sessions",
        json={"project": PROJECT},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()


def run(bench: harness.BenchStack, count: int | None = None) -> dict:
    """Speak each Russian recording once (after one warm-up turn); WER of the final transcripts and latencies."""
    utterances = recordings(bench.settings, count)
    session = _session(bench, _project(bench))
    client = LiveClient(bench.base_url, session, mode="ptt")
    runs: list[dict] = []
    try:
        warm = client.turn(utterances[0][0], "ptt", frame_s=0.02)
        client.quiesce()
        for utt, reference in utterances:
            clear_tts_cache(bench)
            result = client.turn(utt, "ptt", frame_s=0.02)
            errors, total = word_errors(reference, result.transcript)
            reply = next((e.get("text") for e in result.events if e.get("type") == "reply"), None)
            providers = sorted({e.get("provider") for e in result.events if e.get("type") == "audio"} - {None})
            runs.append(
                {
                    **result.to_dict(),
                    "reference": reference,
                    "word_errors": errors,
                    "words": total,
                    "reply": reply,
                    "tts_providers": providers,
                    **check_events(result.events),
                }
            )
            client.quiesce()
            time.sleep(0.3)
    finally:
        client.close()
    return _summary(runs, warm.to_dict())


def _summary(runs: list[dict], warm: dict) -> dict:
    """Corpus WER (errors / reference words) and latency summaries."""
    words = sum(r["words"] for r in runs)
    return {
        "ru_wer": round(sum(r["word_errors"] for r in runs) / words, 4) if words else None,
        "eos_to_final_s": harness.summary([r["eos_to_final_s"] for r in runs if r["eos_to_final_s"] is not None]),
        "eos_to_first_audio_s": harness.summary(
            [r["eos_to_first_audio_s"] for r in runs if r["eos_to_first_audio_s"] is not None]
        ),
        "answered": sum(1 for r in runs if r["status"] == "done"),
        "turns": len(runs),
        "warm_up_turn": {k: warm.get(k) for k in ("transcript", "eos_to_final_s", "eos_to_first_audio_s")},
        "runs": runs,
    }
