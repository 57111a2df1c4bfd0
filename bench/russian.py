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

import numpy as np
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
# Russian sentences spoken with a pause inside (the comma's gap stretched to 0.4-0.7 s, as bench/speech.PAUSED):
# a hands-free endpoint must not cut them. Several pause after words a sentence cannot end on ("узнать,").
PAUSED_RU = (
    "Скажите, пожалуйста, во сколько вы открываетесь в субботу?",
    "Я хотел узнать, сколько стоит доставка.",
    "Если я приеду на машине, где можно припарковаться?",
    "Мой номер заказа четыре пять шесть, и он ещё не пришёл.",
    "Подскажите, есть ли у вас парковка?",
    "Когда я был у вас на прошлой неделе, не работал интернет.",
    "Для компании из шести человек, нужно ли бронировать столик?",
    "Можно узнать, сколько стоит большой капучино?",
    "Я купил у вас кофемашину, и она сломалась.",
    "Кстати, я хотел спросить про часы работы.",
)


def recordings(settings: Settings, count: int | None = None) -> list[tuple[Utterance, str]]:
    """(utterance, reference transcript) for each Russian recording (the first `count` of them)."""
    transcripts: dict[str, str] = json.loads((RU_DIR / "transcripts.json").read_text(encoding="utf-8"))
    out = []
    for name, text in list(transcripts.items())[:count]:
        samples = decode((RU_DIR / name).read_bytes(), settings).samples
        out.append((_utterance(f"ru_{Path(name).stem}", "recording_ru", samples), text))
    return out


def paused(settings: Settings, count: int | None = None) -> list[Utterance]:
    """PAUSED_RU spoken by festival, the first inner gap stretched to 0.4-0.7 s (empty without festival)."""
    from voiceapp.tts import festival

    from .speech import PAUSES, _inner_gap

    if festival.check(settings):
        return []
    provider = festival.create(settings)
    out: list[Utterance] = []
    try:
        for i, text in enumerate(PAUSED_RU[:count]):
            audio = decode(provider.synthesize(text, None, "ru").audio, settings).samples
            start, end = _inner_gap(audio)
            pause = PAUSES[i % len(PAUSES)]
            audio = np.concatenate([audio[:start], np.zeros(int(pause * 16000), np.float32), audio[end:]])
            out.append(_utterance(f"ru_paused{i + 1}", "paused", audio, text, pause))
    finally:
        provider.close()
    return out


def endpointing(settings: Settings, count: int | None = None) -> dict:
    """Hands-free endpoint on Russian: false endpoints on paused sentences, endpoint delay smart vs silence rule.

    The live STT task's recognizer (multilingual base, language ru) fed 20 ms frames by audio position, no
    clock, as scenarios.endpointing does for English. A pause the end-of-turn model is unsure about (or whose
    words end open) falls back to the silence rule: that is the delay the silence column shows.
    """
    from voiceapp.stt.registry import usable_engine
    from voiceapp.stt.streaming import StreamingRecognizer

    from .scenarios import _first_final

    engine = usable_engine(settings, "ru")
    tail = bytes(int(2.5 * 16000) * 2)

    def recognizer(cfg: Settings) -> StreamingRecognizer:
        return StreamingRecognizer(engine, cfg, "ru", end_silence=cfg.endpoint_silence, smart_endpoint=True)

    cut = []
    for utt in paused(settings, count):
        rec = recognizer(settings)
        at, text = _first_final(rec, utt.pcm + tail)
        early = at is not None and at < utt.speech_end_s
        errors, words = word_errors(utt.text, text)
        cut.append(
            {
                "utterance": utt.name,
                "pause_s": utt.pause_s,
                "cut": early,
                "text": text,
                "wer": round(errors / words, 3),
                "turn_probabilities": rec.turn_probabilities,
            }
        )
    questions = [utt for utt, _ in recordings(settings, count)]
    delays: dict[str, list] = {}
    for mode in ("smart", "silence"):
        cfg = settings.replace(endpoint_mode=mode)
        delays[mode] = []
        for utt in questions:
            at, _ = _first_final(recognizer(cfg), utt.pcm + tail)
            delays[mode].append(round(at - utt.speech_end_s, 3) if at is not None else None)
    return {
        "utterances": len(cut),
        "false_endpoints": sum(1 for c in cut if c["cut"]),
        "paused": cut,
        "endpoint_delay_s": {mode: harness.summary(rows) for mode, rows in delays.items()},
        "endpoint_delay_raw_s": delays,
    }


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
                    "stages_s": stages(result),
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
    return {**_summary(runs, warm.to_dict()), "endpointing": endpointing(bench.settings, count)}


STAGES = ("draft_in_flight", "final_decode", "dialog", "tts_first_sentence", "fetch")


def stages(result) -> dict[str, float | None]:
    """Where one turn's end of speech -> first audio went, from the client's clock and the events' server stamps.

    draft_in_flight: a partial decode still running when the visitor released (the final waits for it: the
    last partial's publish time after the end of speech); final_decode: the rest until the final transcript;
    dialog: final -> reply; tts_first_sentence: reply -> first audio event; fetch: that event -> first byte.
    """
    marks = (result.t_final, result.t_reply, result.t_audio_event, result.t_first_byte)
    if not result.t_eos or any(m is None for m in marks):
        return dict.fromkeys(STAGES)
    partials = [
        float(e["ts"]) for e in result.events if e.get("type") == "transcript" and not e.get("final") and e.get("ts")
    ]
    in_flight = min(max([p - result.t_eos for p in partials] + [0.0]), result.t_final - result.t_eos)
    final, reply, audio, first = marks
    values = (in_flight, final - result.t_eos - in_flight, reply - final, audio - reply, first - audio)
    return {name: round(value, 4) for name, value in zip(STAGES, values, strict=True)}


def _stage_summary(runs: list[dict]) -> dict:
    """p50 of each stage over the runs and the stage that holds most of the time."""
    p50 = {name: harness.median([r["stages_s"][name] for r in runs]) for name in STAGES}
    known = {name: value for name, value in p50.items() if value is not None}
    return {"stages_p50_s": p50, "held_by": max(known, key=lambda k: known[k]) if known else None}


def _summary(runs: list[dict], warm: dict) -> dict:
    """Corpus WER (errors / reference words) and latency summaries."""
    words = sum(r["words"] for r in runs)
    return {
        "ru_wer": round(sum(r["word_errors"] for r in runs) / words, 4) if words else None,
        "eos_to_final_s": harness.summary([r["eos_to_final_s"] for r in runs if r["eos_to_final_s"] is not None]),
        "eos_to_first_audio_s": harness.summary(
            [r["eos_to_first_audio_s"] for r in runs if r["eos_to_first_audio_s"] is not None]
        ),
        **_stage_summary(runs),
        "answered": sum(1 for r in runs if r["status"] == "done"),
        "turns": len(runs),
        "warm_up_turn": {k: warm.get(k) for k in ("transcript", "eos_to_final_s", "eos_to_first_audio_s")},
        "runs": runs,
    }
