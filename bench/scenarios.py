"""The six benchmark scenarios; each takes a running BenchStack and returns a JSON-able dict."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence

import numpy as np
import requests
import websocket

from voiceapp.audio import decode
from voiceapp.config import Settings
from voiceapp.dialog.answer import respond
from voiceapp.storage.audio import REPLIES_BUCKET, delete_audio, put_audio
from voiceapp.stt.registry import get_engine
from voiceapp.tts import cache
from voiceapp.tts.registry import get_provider
from voiceapp.tts.service import reply_sentences

from . import harness, speech
from .client import LiveClient, TurnResult, check_events, check_stream
from .harness import BenchStack, median, pct, summary
from .speech import Utterance

SERVER_TIMINGS = (
    "stt_queue_s",
    "stt_s",
    "dialog_queue_s",
    "dialog_s",
    "tts_queue_s",
    "tts_s",
    "tts_engine_s",
    "total_s",
)


QUIET_JFK_STT_S = 0.46  # tiny.en on jfk.flac, beam 1, this machine idle (measured when the project started)


def calibrate(settings, jfk: Utterance, runs: int = 3) -> dict:
    """How loaded the CPU is now: in-process tiny.en on jfk (median of `runs`) against the idle figure."""
    # The idle figure was measured with Whisper's stock 30 s window: compare like with like.
    engine = get_engine(settings.replace(whisper_final_window="full"))
    audio = decode(jfk.wav(), settings)
    engine.transcribe(audio, None)
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        engine.transcribe(audio, None)
        times.append(time.perf_counter() - began)
    value = median(times)
    return {
        "stt_jfk_s": value,
        "idle_machine_reference_s": QUIET_JFK_STT_S,
        "slowdown": round(value / QUIET_JFK_STT_S, 2) if value else None,
    }


def clear_tts_cache(bench: BenchStack) -> int:
    """Forget every cached reply so the next turn synthesizes (a cache miss)."""
    return cache.remove(bench.db, bench.settings, {})


def _auth(session: dict) -> dict:
    return {"Authorization": f"Bearer {session['token']}"}


# ---------------------------------------------------------------- 1. per-stage breakdown


def _upload_turn(bench: BenchStack, client: LiveClient, utt: Utterance, timeout: float = 120.0) -> dict:
    """One turn through the HTTP upload path, with client-side stamps and the server's stage timings."""
    session = client.session
    mark = len(client.inbox)
    began = time.time()
    response = requests.post(
        f"{bench.base_url}/api/v1/voice/sessions/{session['session_id']}/turns",
        data=utt.wav(),
        headers={**_auth(session), "Content-Type": "audio/wav"},
        timeout=60,
    )
    accepted = time.time()
    response.raise_for_status()
    result = TurnResult(utterance=utt.name, mode="upload", turn_id=response.json()["turn_id"], t_eos=began)
    client._collect(result, mark, timeout, fetch_audio=True)
    turn = requests.get(
        f"{bench.base_url}/api/v1/voice/sessions/{session['session_id']}/turns/{result.turn_id}",
        headers=_auth(session),
        timeout=30,
    ).json()
    doc = bench.db[bench.settings.interactions_collection].find_one({"turn_id": result.turn_id}) or {}
    return {
        "utterance": utt.name,
        "status": result.status,
        "transcript": result.transcript,
        "upload_s": round(accepted - began, 4),
        "e2e_done_s": result.since_eos(result.t_done),
        "e2e_first_audio_s": result.since_eos(result.t_first_byte),
        "e2e_audio_event_s": result.since_eos(result.t_audio_event),
        "audio_fetch_first_byte_s": (
            round(result.t_first_byte - result.t_audio_event, 4)
            if result.t_first_byte and result.t_audio_event
            else None
        ),
        "pubsub_s": median(result.pubsub_s),
        "timings": {k: turn.get("timings", {}).get(k) for k in SERVER_TIMINGS},
        "tts_doc": {k: (doc.get("tts") or {}).get(k) for k in ("cache_hits", "cache_misses", "chunks", "provider")},
        "timed_out": result.timed_out,
    }


def _in_process(bench: BenchStack, utt: Utterance, chunks_first: bool = False) -> dict:
    """The same engines on the same audio, called directly in this process (no queues, no storage)."""
    settings, db = bench.settings, bench.db
    wav = utt.wav()
    t0 = time.perf_counter()
    audio = decode(wav, settings)
    t1 = time.perf_counter()
    transcript = get_engine(settings).transcribe(audio, None)
    t2 = time.perf_counter()
    reply = respond(db, settings, harness.PROJECT, transcript.text.strip(), [])
    t3 = time.perf_counter()
    synthesis = get_provider(settings, "piper").synthesize(reply.text, None, None)
    t4 = time.perf_counter()
    audio_id = put_audio(
        db,
        synthesis.audio,
        bucket=REPLIES_BUCKET,
        filename="bench.wav",
        content_type="audio/wav",
        metadata={"session_id": "bench-in-process"},
    )
    t5 = time.perf_counter()
    key = cache.make_key(
        reply.text + uuid.uuid4().hex, voice=synthesis.voice, language=None, provider="piper", fmt=synthesis.mime_type
    )
    cache.lookup(db, settings, key)
    t6 = time.perf_counter()
    delete_audio(db, audio_id, bucket=REPLIES_BUCKET)
    one_call, per_chunk = _voice_calls(settings, reply.text, chunks_first)
    return {
        "decode_s": t1 - t0,
        "stt_s": t2 - t1,
        "dialog_s": t3 - t2,
        "tts_s": t4 - t3,
        # Not part of the reference: the same reply again in one call and in one call per chunk, which splits
        # the voice's share of the overhead (the first call after recognition is slower than either).
        "tts_again_s": one_call,
        "tts_chunked_s": per_chunk,
        "engines_total_s": t4 - t0,
        "storage_put_s": t5 - t4,
        "cache_lookup_miss_s": t6 - t5,
        "reply_chars": len(reply.text),
        "transcript": transcript.text.strip(),
    }


def _voice_calls(settings: Settings, text: str, chunks_first: bool) -> tuple[float, float]:
    """Seconds to speak `text` in one call and in one call per chunk (as the TTS stage does), in either order."""
    voice = get_provider(settings, "piper")

    def one() -> float:
        t = time.perf_counter()
        voice.synthesize(text, None, None)
        return time.perf_counter() - t

    def chunks() -> float:
        t = time.perf_counter()
        for piece in reply_sentences(settings, text):
            voice.synthesize(piece, None, None)
        return time.perf_counter() - t

    if chunks_first:
        per_chunk = chunks()
        return one(), per_chunk
    one_call = one()
    return one_call, chunks()


def _medians(rows: list[dict], keys: Sequence[str]) -> dict:
    return {k: median([r.get(k) for r in rows]) for k in keys}


def stage_breakdown(bench: BenchStack, utterances: Sequence[Utterance], reps: int) -> dict:
    """Scenario 1: where one turn's time goes, and pipeline turn time / in-process engine time."""
    session = harness.new_session(bench.base_url)
    client = LiveClient(bench.base_url, session)
    per_utterance = {}
    try:
        clear_tts_cache(bench)
        _upload_turn(bench, client, utterances[0])  # warm-up: first turn loads indexes, connections
        _in_process(bench, utterances[0])
        for utt in utterances:
            pipeline, local = [], []
            for rep in range(reps):
                clear_tts_cache(bench)  # a miss every time, like the in-process run
                pipeline.append(_upload_turn(bench, client, utt))
                local.append(_in_process(bench, utt, chunks_first=rep % 2 == 1))  # order alternates: no bias
            per_utterance[utt.name] = _utterance_breakdown(pipeline, local)
    finally:
        client.close()
    ratios = [u["overhead_ratio"] for u in per_utterance.values() if u["overhead_ratio"]]
    return {
        "reps": reps,
        "utterances": per_utterance,
        "overhead_ratio": median(ratios),
        "method": "pipeline = POST of the WAV -> `done` event at the client (HTTP upload path, every stage, "
        "TTS cache cleared before each turn); in-process = decode + STT + dialog + TTS engines "
        "called directly in the bench process on the same audio; ratio of medians per utterance, "
        "then the median over utterances",
    }


def _utterance_breakdown(pipeline: list[dict], local: list[dict]) -> dict:
    server = {k: median([p["timings"].get(k) for p in pipeline]) for k in SERVER_TIMINGS}
    client = _medians(
        pipeline,
        ("upload_s", "e2e_done_s", "e2e_first_audio_s", "e2e_audio_event_s", "audio_fetch_first_byte_s", "pubsub_s"),
    )
    engines = _medians(
        local,
        (
            "decode_s",
            "stt_s",
            "dialog_s",
            "tts_s",
            "tts_again_s",
            "tts_chunked_s",
            "engines_total_s",
            "storage_put_s",
            "cache_lookup_miss_s",
        ),
    )
    ratio = (
        round(client["e2e_done_s"] / engines["engines_total_s"], 3)
        if client["e2e_done_s"] and engines["engines_total_s"]
        else None
    )
    overhead = _overheads(server, client, engines)
    fixed = (
        round(client["e2e_done_s"] - engines["engines_total_s"], 4)
        if client["e2e_done_s"] and engines["engines_total_s"]
        else None
    )
    return {
        "pipeline_client": client,
        "pipeline_server": server,
        "in_process": engines,
        "overhead_ratio": ratio,
        "fixed_overhead_s": fixed,
        "overhead_s": overhead,
        "largest_overhead": max(overhead, key=lambda k: overhead[k] or 0),
        "runs": pipeline,
        "in_process_runs": [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in local],
    }


def _overheads(server: dict, client: dict, engines: dict) -> dict:
    """Seconds each part of the pipeline adds on top of the engines themselves; together they make the turn.

    The POST's own duration is not a part: the turn's record and the upload's GridFS copy follow the enqueue and
    overlap recognition. What the turn waits for is the request until the server accepts it.
    """

    def diff(a, b):
        return round(a - b, 4) if a is not None and b is not None else None

    queues = [server.get(k) for k in ("stt_queue_s", "dialog_queue_s", "tts_queue_s")]
    queue_waits = round(sum(q for q in queues if q is not None), 4) if any(q is not None for q in queues) else None
    stages = [server.get(k) for k in ("stt_s", "dialog_s", "tts_s")]
    # The voice's calls per chunk less one call per reply, both timed warm after the reference (0 without them).
    chunking = diff(engines.get("tts_chunked_s"), engines.get("tts_again_s")) or 0.0
    chunked = engines["tts_s"] + chunking if engines["tts_s"] is not None else None
    inside = None if queue_waits is None or None in stages else queue_waits + sum(stages)
    return {
        "upload_until_accepted": diff(diff(client.get("e2e_done_s"), server.get("total_s")), client.get("pubsub_s")),
        "queue_waits": queue_waits,
        "stt_stage_minus_engine": diff(server.get("stt_s"), (engines["stt_s"] or 0) + (engines["decode_s"] or 0)),
        "dialog_stage_minus_engine": diff(server.get("dialog_s"), engines["dialog_s"]),
        # The stage's own engine time splits what the TTS stage adds: the voice's calls one per chunk instead of
        # one per reply (the price of the first audio coming early), the same calls slower in the stack than alone
        # in this process (cores shared with the other processes), and the stage around the voice (cache
        # lookups, storage, one record per chunk).
        "tts_chunks_minus_one_call": round(chunking, 4),
        "tts_engine_in_stack_minus_in_process": diff(server.get("tts_engine_s"), chunked),
        "tts_stage_minus_its_engine": diff(server.get("tts_s"), server.get("tts_engine_s")),
        "pubsub_delivery": client.get("pubsub_s"),
        "after_the_stages": diff(server.get("total_s"), inside),
    }


# ---------------------------------------------------------------- 2. end of speech -> transcript / audio


def latency_modes(bench: BenchStack, plan: dict[str, Sequence[Utterance]], reps: int) -> dict:
    """Scenario 2: end of speech -> final transcript and -> first reply audio byte, streamed at real-time pace.

    `plan` maps a mode ("ptt": `end` sent at end of speech; "handsfree": silence streamed until the server's
    VAD ends the utterance) to the utterances spoken in it. The TTS cache is cleared before each turn (misses).
    """
    runs: list[dict] = []
    for mode, utterances in plan.items():
        session = harness.new_session(bench.base_url)
        client = LiveClient(bench.base_url, session, mode=mode)
        try:
            for utt in utterances:
                for _ in range(reps):
                    clear_tts_cache(bench)
                    result = client.turn(utt, mode, frame_s=0.02)
                    runs.append(
                        {
                            **result.to_dict(),
                            "kind": utt.kind,
                            "speech_end_s": utt.speech_end_s,
                            **check_events(result.events),
                        }
                    )
                    client.quiesce()  # a split utterance's second part must not overlap the next turn
                    time.sleep(0.3)
            stream = check_stream(client.inbox)
        finally:
            client.close()
        runs.append({"mode": mode, "connection": stream})
    out: dict = {
        "reps": reps,
        "frame_s": 0.02,
        "by_mode": {},
        "connections": {r["mode"]: r["connection"] for r in runs if "connection" in r},
    }
    out["runs"] = runs = [r for r in runs if "connection" not in r]
    recorded = _tts_records(bench, [r["turn_id"] for r in runs if r.get("turn_id")])
    for r in runs:
        r.update(recorded.get(r.get("turn_id") or "", {"prepared": None}))
    for mode in plan:
        # A split utterance has no end of speech to measure from (the server ended it at an inner pause).
        mine = [r for r in runs if r["mode"] == mode and not r["split"]]
        out["by_mode"][mode] = {
            key: summary([r[key] for r in mine])
            for key in ("eos_to_partial_s", "eos_to_final_s", "eos_to_reply_s", "eos_to_first_audio_s", "eos_to_done_s")
        }
        out["by_mode"][mode]["split"] = [r["utterance"] for r in runs if r["mode"] == mode and r["split"]]
        # Speculative reply (issue 15): turns whose first audio came from the reply prepared at a pause.
        out["by_mode"][mode]["prepared"] = {o: sum(1 for r in mine if r["prepared"] == o) for o in ("used", "dropped")}
        out["by_mode"][mode]["by_kind"] = {
            kind: {
                key: summary([r[key] for r in mine if r["kind"] == kind])
                for key in ("eos_to_final_s", "eos_to_first_audio_s")
            }
            for kind in sorted({r["kind"] for r in mine})
        }
    return out


def _tts_records(bench: BenchStack, turn_ids: list[str]) -> dict[str, dict]:
    """turn_id -> its TTS stage as the server timed it, and "used"/"dropped" when a reply was prepared at a pause."""
    docs = bench.db[bench.settings.interactions_collection].find(
        {"turn_id": {"$in": turn_ids}}, {"turn_id": 1, "tts.prepared": 1, "tts.prepared_wait_s": 1, "timings": 1}
    )
    return {
        d["turn_id"]: {
            "prepared": (d.get("tts") or {}).get("prepared"),
            # How long the TTS stage waited for a preparation still under way (it started too late to be done).
            "server_prepared_wait_s": (d.get("tts") or {}).get("prepared_wait_s"),
            **{f"server_{k}": v for k, v in (d.get("timings") or {}).items() if k.startswith("tts")},
        }
        for d in docs
    }


# ---------------------------------------------------------------- 3. cache hit vs miss


def cache_hit_miss(bench: BenchStack, utt: Utterance, reps: int, e2e_reps: int | None = None) -> dict:
    """Scenario 3: time to first audio on a cache miss vs a hit, in the TTS service and end to end."""
    from voiceapp.tts.service import synthesize_reply

    service = {"miss": [], "hit": []}
    for i in range(reps):
        text = (
            f"Your order number {random.randint(1000, 9999)} is on its way. "
            f"It should arrive within forty minutes, reference {uuid.uuid4().hex[:6]}."
        )
        for label in ("miss", "hit"):
            first: list[float] = []
            began = time.perf_counter()
            synthesize_reply(
                bench.db,
                bench.settings,
                text=text,
                provider_name="piper",
                project=harness.PROJECT,
                session_id=f"bench-cache-{i}",
                on_chunk=lambda chunk, first=first: first.append(time.perf_counter()) if not first else None,
            )
            service[label].append(round(first[0] - began, 5) if first else None)
    e2e = {"miss": [], "hit": []}
    tts_part = {"miss": [], "hit": []}  # reply event -> audio event: the TTS stage without STT's noise
    cached_flags = {"miss": [], "hit": []}
    session = harness.new_session(bench.base_url)
    client = LiveClient(bench.base_url, session)
    try:
        for _ in range(reps if e2e_reps is None else e2e_reps):
            clear_tts_cache(bench)
            for label in ("miss", "hit"):
                result = client.turn(utt, "ptt")
                e2e[label].append(result.since_eos(result.t_first_byte))
                if result.t_reply and result.t_audio_event:
                    tts_part[label].append(round(result.t_audio_event - result.t_reply, 4))
                audio = [e for e in result.events if e["type"] == "audio"]
                cached_flags[label].append(audio[0].get("cached") if audio else None)
                time.sleep(0.3)
    finally:
        client.close()
    hit, miss = pct(service["hit"], 50), pct(service["miss"], 50)
    e2e_hit, e2e_miss = pct(e2e["hit"], 50), pct(e2e["miss"], 50)
    return {
        "reps": reps,
        "service": {
            "miss": summary(service["miss"]),
            "hit": summary(service["hit"]),
            "speedup": round(miss / hit, 1) if hit and miss else None,
            "raw": service,
        },
        "end_to_end": {
            "miss": summary(e2e["miss"]),
            "hit": summary(e2e["hit"]),
            "speedup": round(e2e_miss / e2e_hit, 2) if e2e_hit and e2e_miss else None,
            "reply_to_audio_event_s": {"miss": summary(tts_part["miss"]), "hit": summary(tts_part["hit"])},
            "audio_event_cached_flag": cached_flags,
            "raw": e2e,
        },
        "method": "service: voiceapp.tts.service.synthesize_reply (Piper, MongoDB/GridFS cache) from call to the "
        "first sentence's audio stored; end_to_end: the same spoken question twice over the WebSocket "
        "(push-to-talk), end of speech -> first reply audio byte at the client, cache cleared first",
    }


# ---------------------------------------------------------------- 4. concurrent sessions


def _session_loop(
    bench: BenchStack,
    client: LiveClient,
    utterances: Sequence[Utterance],
    index: int,
    keep_going: Callable[[int], bool],
    results: list,
    start_gate: threading.Event,
    jitter: float,
) -> None:
    start_gate.wait()
    time.sleep(jitter)
    turn = 0
    while keep_going(turn):
        utt = utterances[(index + turn) % len(utterances)]
        try:
            result = client.turn(utt, "ptt", frame_s=0.1, timeout=300)
        except (websocket.WebSocketException, OSError) as err:
            results.append({"error": repr(err), "session": index})
            return
        results.append(
            {
                **result.to_dict(),
                "session": index,
                "t_start": result.t_start,
                "t_done": result.t_done,
                **check_events(result.events),
            }
        )
        turn += 1


def concurrency(bench: BenchStack, utterances: Sequence[Utterance], plan: Sequence[tuple[int, int]]) -> dict:
    """Scenario 4: N sessions talking at once over WebSockets; latency, throughput, lost/duplicated events."""
    out: dict = {}
    for n, turns in plan:
        sessions = [harness.new_session(bench.base_url) for _ in range(n)]
        clients = [LiveClient(bench.base_url, s) for s in sessions]
        results: list[dict] = []
        gate = threading.Event()
        threads = [
            threading.Thread(
                target=_session_loop,
                daemon=True,
                args=(bench, c, utterances, i, lambda t, turns=turns: t < turns, results, gate, random.uniform(0, 1.0)),
            )
            for i, c in enumerate(clients)
        ]
        for thread in threads:
            thread.start()
        began = time.time()
        gate.set()
        for thread in threads:
            thread.join(timeout=600)
        time.sleep(1.0)  # trailing events
        streams = [check_stream(c.inbox) for c in clients]
        for c in clients:
            c.close()
        out[str(n)] = _concurrency_summary(n, turns, results, streams, began)
        time.sleep(1.0)
    return {
        "by_sessions": out,
        "frame_s": 0.1,
        "mode": "ptt",
        "method": "N sessions each stream Piper-spoken questions at real-time pace in 100 ms frames "
        "(push-to-talk), start jittered over 1 s, fetch the reply audio, repeat; latency = end of "
        "speech -> done; lost = seq gaps per connection + missing events of answered turns "
        "(+5 per turn that never finished)",
    }


def _concurrency_summary(n: int, turns: int, results: list[dict], streams: list[dict], began: float) -> dict:
    ok = [r for r in results if "error" not in r and r.get("status") == "done"]
    ends = [r["t_done"] for r in ok if r.get("t_done")]
    wall = (max(ends) - began) if ends else None
    expected = n * turns
    missing_turns = expected - len([r for r in results if "error" not in r and not r.get("timed_out")])
    lost = sum(s["lost"] for s in streams) + sum(r.get("lost", 0) for r in results if "error" not in r)
    return {
        "sessions": n,
        "turns_per_session": turns,
        "turns_expected": expected,
        "turns_done": len(ok),
        "turn_latency_s": summary([r["eos_to_done_s"] for r in ok]),
        "eos_to_first_audio_s": summary([r["eos_to_first_audio_s"] for r in ok]),
        "eos_to_final_s": summary([r["eos_to_final_s"] for r in ok]),
        "turns_per_minute": round(len(ok) / wall * 60, 2) if wall else None,
        "wall_s": round(wall, 2) if wall else None,
        "lost_events": lost + 5 * missing_turns,
        "duplicated_events": sum(s["duplicated"] for s in streams) + sum(r.get("duplicated", 0) for r in ok),
        "out_of_order": sum(s["out_of_order"] for s in streams),
        "timeouts": sum(1 for r in results if r.get("timed_out")),
        "errors": [e for r in results for e in (r.get("errors") or [])][:20] + [r for r in results if "error" in r][:5],
        "statuses": {s: sum(1 for r in results if r.get("status") == s) for s in {r.get("status") for r in results}},
    }


# ---------------------------------------------------------------- 5. idle WebSockets


def idle_connections(bench: BenchStack, n: int, settle: float = 3.0) -> dict:
    """Scenario 5: how many idle WebSockets one API process holds, and its memory per connection."""
    pid = bench.pids()["api"]
    per_session = 10
    sessions = [harness.new_session(bench.base_url) for _ in range(max(1, n // per_session))]
    urls = [f"{bench.ws_url}/api/v1/voice/ws/{s['session_id']}?token={s['token']}" for s in sessions]
    warm = websocket.create_connection(urls[0], timeout=10)
    warm.close()
    time.sleep(1.0)
    before = harness.rss_kib(pid)
    began = time.monotonic()
    sockets, open_error = _open_all(urls, n)
    open_s = time.monotonic() - began
    time.sleep(settle)
    after = harness.rss_kib(pid)
    cpu0, wall0 = harness.cpu_seconds(pid), time.monotonic()
    time.sleep(max(2.0, settle + 2.0))
    idle_cpu = (harness.cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0)
    alive = _ping_sample(sockets, 20)
    health = time.perf_counter()
    healthy = requests.get(f"{bench.base_url}/healthz", timeout=30).status_code == 200
    health = time.perf_counter() - health
    _close_all(sockets)
    time.sleep(settle)
    closed = harness.rss_kib(pid)
    opened = len(sockets)
    # A second round tells a leak (RSS keeps rising) from memory the allocator keeps for reuse (it does not).
    again, _ = _open_all(urls, n)
    time.sleep(settle)
    second = harness.rss_kib(pid)
    _close_all(again)
    time.sleep(settle)
    second_closed = harness.rss_kib(pid)
    return {
        "requested": n,
        "opened": opened,
        "open_error": open_error,
        "sessions": len(sessions),
        "open_seconds": round(open_s, 2),
        "rss_before_kib": before,
        "rss_after_kib": after,
        "rss_after_close_kib": closed,
        "rss_second_round_kib": second,
        "rss_after_second_close_kib": second_closed,
        "kib_each": round((after - before) / opened, 1) if opened else None,
        "idle_cpu_percent": round(100 * idle_cpu, 1),
        "ping_sample_ok": alive,
        "healthz_ok": healthy,
        "healthz_s_while_holding": round(health, 4),
    }


def _open_all(urls: list[str], n: int) -> tuple[list, str | None]:
    """Open n sockets round-robin over the session URLs; stop at the first failure (and say why)."""
    sockets = []
    for i in range(n):
        try:
            sockets.append(websocket.create_connection(urls[i % len(urls)], timeout=20))
        except (websocket.WebSocketException, OSError) as err:
            return sockets, f"socket {i + 1}: {err!r}"
    return sockets, None


def _close_all(sockets: list) -> None:
    for ws in sockets:
        try:
            ws.close()
        except Exception:
            pass


def _ping_sample(sockets: list, count: int) -> str:
    import json

    sample = random.sample(sockets, min(count, len(sockets)))
    ok = 0
    for ws in sample:
        try:
            ws.send(json.dumps({"type": "ping"}))
            ws.settimeout(10)
            if json.loads(ws.recv()).get("type") == "pong":
                ok += 1
        except (websocket.WebSocketException, OSError, ValueError):
            pass
    return f"{ok}/{len(sample)}"


# ---------------------------------------------------------------- 6. soak


def soak(
    bench: BenchStack, utterances: Sequence[Utterance], seconds: float, sessions: int, sample_every: float | None = None
) -> dict:
    """Scenario 6: sessions looping turns for `seconds`; RSS of the API and workers sampled; growth per minute."""
    sample_every = sample_every or min(2.0, seconds / 20)
    pids = bench.pids()
    clients = [LiveClient(bench.base_url, harness.new_session(bench.base_url)) for _ in range(sessions)]
    results: list[dict] = []
    gate = threading.Event()
    deadline = time.monotonic() + seconds
    stopped: list[float] = []  # when each session's loop ended (at the deadline, or earlier on an error)

    def converse(*args) -> None:
        try:
            _session_loop(*args)
        finally:
            stopped.append(time.monotonic())

    threads = [
        threading.Thread(
            target=converse,
            daemon=True,
            args=(bench, c, utterances, i, lambda t: time.monotonic() < deadline, results, gate, 0.2 * i),
        )
        for i, c in enumerate(clients)
    ]
    samples: list[dict] = []
    began = deadline - seconds
    for thread in threads:
        thread.start()
    gate.set()
    while any(t.is_alive() for t in threads):
        samples.append(
            {"t": round(time.monotonic() - began, 2), **{name: harness.rss_kib(pid) for name, pid in pids.items()}}
        )
        time.sleep(sample_every)
        if time.monotonic() > deadline + 300:
            break
    streams = [check_stream(c.inbox) for c in clients]
    for c in clients:
        c.close()
    # The soak lasted as long as every session kept conversing: a session that died shortens it.
    ran = round(min(stopped, default=time.monotonic()) - began, 1)
    return {**_soak_summary(pids, samples, results, streams, ran, sessions), "requested_seconds": seconds}


def _floor_points(samples: list[dict], name: str, windows: int = 6) -> list[tuple[float, float]]:
    """(mid time, lowest RSS in MiB) per window: the memory a process keeps between turns."""
    pts = [(s["t"], s[name] / 1024) for s in samples if s.get(name)]
    size = max(2, len(pts) // windows)
    chunks = [pts[i : i + size] for i in range(0, len(pts), size)]
    return [((c[0][0] + c[-1][0]) / 2, min(v for _, v in c)) for c in chunks if len(c) == size]


def _soak_summary(
    pids: dict, samples: list[dict], results: list[dict], streams: list[dict], seconds: float, sessions: int
) -> dict:
    """Growth per session from the RSS samples; `seconds`: how long all `sessions` kept conversing."""
    # The first fifth is warm-up (first-use allocations, caches filling), not growth.
    steady = [s for s in samples if s["t"] >= 0.2 * seconds]
    # A worker's RSS swings by tens of MiB within a turn (decode buffers freed after it): growth is measured
    # on the floor (lowest RSS per window), the memory kept between turns; the raw slope is kept beside it.
    floor = {name: harness.slope_per_minute(_floor_points(steady, name)) for name in pids}
    raw = {name: harness.slope_per_minute([(s["t"], s[name] / 1024) for s in steady if s.get(name)]) for name in pids}
    known = [v for v in floor.values() if v is not None]
    total = round(sum(known), 4) if known else None
    ok = [r for r in results if r.get("status") == "done"]
    return {
        "seconds": seconds,
        "sessions": sessions,
        "turns_done": len(ok),
        "turns_failed": len(results) - len(ok),
        "method": "RSS (VmRSS) of the API's gunicorn worker and each Celery worker (every 2 s, or seconds/20) after a warm-up "
        "fifth; growth = least-squares slope of the lowest RSS in each of 6 windows (memory kept "
        "between turns), summed over processes, divided by sessions",
        "turn_latency_s": summary([r["eos_to_done_s"] for r in ok]),
        "lost_events": sum(s["lost"] for s in streams),
        "duplicated_events": sum(s["duplicated"] for s in streams),
        "mib_per_min": floor,
        "raw_mib_per_min": raw,
        "total_mib_per_min": total,
        "mib_per_min_per_session": round(total / sessions, 4) if total is not None else None,
        "rss_min_mib": {n: round(min(s[n] for s in samples if s.get(n)) / 1024, 1) for n in pids},
        "rss_max_mib": {n: round(max(s[n] for s in samples if s.get(n)) / 1024, 1) for n in pids},
        "samples": samples,
    }


# ---------------------------------------------------------------- 7. hands-free endpointing


def _first_final(recognizer, pcm: bytes, frame: int = 640) -> tuple[float | None, str]:
    """Feed PCM16 in 20 ms frames; (seconds of audio fed when the first final came, its text)."""
    for start in range(0, len(pcm), frame * 2):
        for transcript in recognizer.feed(pcm[start : start + frame * 2]):
            if transcript.final:
                return (start + frame * 2) / 2 / 16000, transcript.text
    final = recognizer.finish()
    return None, final.text if final else ""


def endpointing(settings, paused: Sequence[Utterance], questions: Sequence[Utterance]) -> dict:
    """Scenario 7: the hands-free endpoint on the STT task's own recognizer, fed at audio positions (no clock).

    False endpoint = a sentence with a pause inside whose first final came before its speech ended. The
    endpoint delay (final position - end of speech) of whole questions is measured in smart and silence mode.
    """
    from voiceapp.stt.registry import usable_engine
    from voiceapp.stt.streaming import StreamingRecognizer
    from voiceapp.stt.wer import wer

    engine = usable_engine(settings)
    tail = bytes(int(2.5 * 16000) * 2)
    cut = []
    for utt in paused:
        recognizer = StreamingRecognizer(
            engine, settings, "en", end_silence=settings.endpoint_silence, smart_endpoint=True
        )
        at, text = _first_final(recognizer, utt.pcm + tail)
        early = at is not None and at < utt.speech_end_s
        cut.append(
            {
                "utterance": utt.name,
                "pause_s": utt.pause_s,
                "cut": early,
                "text": text,
                "wer": round(wer(utt.text, text), 3),
                "turn_probabilities": recognizer.turn_probabilities,
            }
        )
    delays: dict[str, list] = {}
    for mode in ("smart", "silence"):
        cfg = settings.replace(endpoint_mode=mode)
        rows = []
        for utt in questions:
            recognizer = StreamingRecognizer(engine, cfg, "en", end_silence=cfg.endpoint_silence, smart_endpoint=True)
            at, _ = _first_final(recognizer, utt.pcm + tail)
            rows.append(round(at - utt.speech_end_s, 3) if at is not None else None)
        delays[mode] = rows
    return {
        "utterances": len(paused),
        "false_endpoints": sum(1 for c in cut if c["cut"]),
        "paused": cut,
        "endpoint_delay_s": {mode: summary(rows) for mode, rows in delays.items()},
        "endpoint_delay_raw_s": delays,
        "settings": {
            "mode": settings.endpoint_mode,
            "min_silence_s": settings.endpoint_min_silence,
            "complete": settings.endpoint_complete,
            "end_silence_s": settings.endpoint_silence,
        },
        "method": "the live STT task's StreamingRecognizer (hands-free settings of the stack) fed 20 ms frames by "
        "audio position, no clock: false endpoints = Piper sentences with a 0.4-0.7 s pause inside whose first "
        "final came before their speech ended; endpoint delay = audio position of the final - end of speech "
        "(Silero VAD), smart vs silence mode, on the Piper questions",
    }


# ---------------------------------------------------------------- 8. accuracy: pipeline vs stock engine


def accuracy(settings, utterances: dict[str, Utterance], runs: Sequence[dict], takes: int = 0) -> dict:
    """Scenario 8: WER of the pipeline's final transcripts vs the stock engine (30 s window) on the same audio.

    Two sources: the latency scenario's turns through the whole stack, and `takes` fresh Piper takes of each
    question fed to the live STT stage's recognizer in-process (the same code, push-to-talk), because a dozen
    turns is a sample where one word moves the key by 0.01.
    """
    from voiceapp.models import DecodedAudio
    from voiceapp.stt.wer import word_errors

    stock = get_engine(settings.replace(whisper_final_window="full"))
    rows = []
    for run in runs:
        utt = utterances.get(run.get("utterance"))
        if utt is None or not utt.text or run.get("status") != "done" or run.get("split"):
            continue
        pcm = utt.speech_pcm() if run["mode"] == "ptt" else utt.pcm
        engine_text = stock.transcribe(DecodedAudio(samples=_samples(pcm), sample_rate=16000), "en").text
        rows.append(_accuracy_row(utt, run["mode"], run.get("transcript") or "", engine_text, word_errors))
    for _ in range(takes):
        for utt in speech.synthesized(settings):
            pcm = utt.speech_pcm()
            final = _recognizer_final(settings, pcm)
            engine_text = stock.transcribe(DecodedAudio(samples=_samples(pcm), sample_rate=16000), "en").text
            rows.append(_accuracy_row(utt, "recognizer", final, engine_text, word_errors))
    turns = [r for r in rows if r["mode"] != "recognizer"]
    return {
        **_wer_totals(rows),
        "stack_turns": _wer_totals(turns),
        "recognizer_takes": _wer_totals([r for r in rows if r["mode"] == "recognizer"]),
        "runs": turns,
        "method": "final transcripts against the references; engine = the same model in-process with Whisper's stock "
        "30 s window on the same audio. Sources: the latency scenario's turns (every mode; push-to-talk audio up to "
        f"the end of speech, hands-free the whole stream) and {takes} fresh Piper take(s) of each question fed to "
        "the live STT stage's recognizer in-process (push-to-talk)",
    }


def _samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0


def _recognizer_final(settings, pcm: bytes) -> str:
    """The final transcript the live STT stage's recognizer gives `pcm` spoken push-to-talk (40 ms frames)."""
    from voiceapp.stt.streaming import StreamingRecognizer

    recognizer = StreamingRecognizer(get_engine(settings), settings, "en", sample_rate=16000)
    for start in range(0, len(pcm), 1280):
        recognizer.feed(pcm[start : start + 1280])
    final = recognizer.finish()
    return final.text if final else ""


def _accuracy_row(utt: Utterance, mode: str, text: str, engine_text: str, word_errors) -> dict:
    p_err, n = word_errors(utt.text, text)
    s_err, _ = word_errors(utt.text, engine_text)
    return {"utterance": utt.name, "mode": mode, "words": n, "pipeline_errors": p_err, "engine_errors": s_err}


def _wer_totals(rows: list[dict]) -> dict:
    words = sum(r["words"] for r in rows)
    if not words:
        return {"words": 0, "pipeline_wer": None, "engine_wer": None, "pipeline_wer_minus_engine_wer": None}
    pipeline_wer = round(sum(r["pipeline_errors"] for r in rows) / words, 4)
    engine_wer = round(sum(r["engine_errors"] for r in rows) / words, 4)
    return {
        "words": words,
        "pipeline_wer": pipeline_wer,
        "engine_wer": engine_wer,
        "pipeline_wer_minus_engine_wer": round(pipeline_wer - engine_wer, 4),
    }


# ---------------------------------------------------------------- 9. conversing sessions (talking_sessions)

TALK_FRAME_S = 0.04  # frames of 40 ms: the widget's size order, and cheap enough for 12 paced senders
TALK_THINK_S = 2.0  # the visitor waits this long after the reply ends before asking again
TALK_P95_S = 1.5  # end of speech -> first audio p95 for a number of sessions to "hold"
TALK_SEGMENTS = ("recognition", "dialog_queue", "dialog", "handoff", "tts_queue", "first_sentence", "fetch")


def _converse(
    client: LiveClient,
    utterances: Sequence[Utterance],
    index: int,
    deadline: float,
    results: list,
    start_gate: threading.Event,
    jitter: float,
) -> None:
    """One visitor: ask, listen to the whole reply, wait TALK_THINK_S, ask again, until `deadline`."""
    start_gate.wait()
    time.sleep(jitter)
    turn = 0
    while time.monotonic() < deadline:
        utt = utterances[(index + turn) % len(utterances)]
        try:
            result = client.turn(utt, "ptt", frame_s=TALK_FRAME_S, timeout=120)
        except (websocket.WebSocketException, OSError) as err:
            results.append({"error": repr(err), "session": index})
            return
        audio = [e for e in result.events if e["type"] == "audio"]
        reply_s = sum(float(e.get("duration") or 0.0) for e in audio)
        results.append(
            {
                **result.to_dict(),
                "session": index,
                "reply_audio_s": round(reply_s, 3),
                "cached": bool(audio and audio[0].get("cached")),
                "t_start": result.t_start,
            }
        )
        # Playback starts at the first byte and lasts the reply's audio; then the visitor thinks.
        heard_from = result.t_first_byte or result.t_done or time.time()
        time.sleep(max(0.0, heard_from + reply_s - time.time()) + TALK_THINK_S)
        turn += 1


def _segments(row: dict, timings: dict) -> dict[str, float | None]:
    """Where one turn's end of speech -> first audio went: recognition, queue waits, engines, fetch."""

    def gap(a: str, b: str) -> float | None:
        return round(row[b] - row[a], 4) if row.get(a) is not None and row.get(b) is not None else None

    dialog_queue, dialog, tts_queue = (timings.get(k) for k in ("dialog_queue_s", "dialog_s", "tts_queue_s"))
    reply = gap("eos_to_final_s", "eos_to_reply_s")
    synthesis = gap("eos_to_reply_s", "eos_to_audio_event_s")
    return {
        "recognition": row.get("eos_to_final_s"),
        "dialog_queue": dialog_queue,
        "dialog": dialog,
        # The rest of final -> reply: recording the turn, events, the reply's publish (plumbing).
        "handoff": round(reply - (dialog_queue or 0.0) - (dialog or 0.0), 4) if reply is not None else None,
        "tts_queue": tts_queue,
        "first_sentence": round(synthesis - (tts_queue or 0.0), 4) if synthesis is not None else None,
        "fetch": gap("eos_to_audio_event_s", "eos_to_first_audio_s"),
    }


def talk_arrivals(n: int, seconds: float, cycle: float = 6.0) -> list[float]:
    """When each of `n` visitors starts, spread at random over about one question + reply + pause (`cycle`).

    Seeded by `n`, so every run of a step has the same arrivals: its few slowest turns depend on how many
    sessions happen to start together, which would otherwise differ from run to run.
    """
    arrivals = random.Random(f"talking-{n}")
    return [arrivals.uniform(0, min(cycle, seconds / 2)) for _ in range(n)]


def _talking_step(bench: BenchStack, utterances: Sequence[Utterance], n: int, seconds: float) -> dict:
    """N sessions conversing for `seconds`; latency per turn and where it went."""
    clients = [LiveClient(bench.base_url, harness.new_session(bench.base_url)) for _ in range(n)]
    results: list[dict] = []
    gate = threading.Event()
    deadline = time.monotonic() + seconds
    threads = [
        threading.Thread(target=_converse, daemon=True, args=(c, utterances, i, deadline, results, gate, delay))
        for i, (c, delay) in enumerate(zip(clients, talk_arrivals(n, seconds), strict=True))
    ]
    load = harness.load_average()
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join(timeout=seconds + 300)
    streams = [check_stream(c.inbox) for c in clients]
    for c in clients:
        c.close()
    return _talking_summary(bench, n, seconds, results, streams, load)


def _server_timings(bench: BenchStack, turn_ids: list[str]) -> dict[str, dict]:
    """turn_id -> the stage timings the pipeline recorded on the turn."""
    docs = bench.db[bench.settings.interactions_collection].find(
        {"turn_id": {"$in": turn_ids}}, {"turn_id": 1, "timings": 1}
    )
    return {d["turn_id"]: d.get("timings") or {} for d in docs}


def _talking_summary(
    bench: BenchStack, n: int, seconds: float, results: list[dict], streams: list[dict], load: list[float]
) -> dict:
    ok = [r for r in results if "error" not in r and r.get("status") == "done"]
    timings = _server_timings(bench, [r["turn_id"] for r in ok if r.get("turn_id")])
    segments = [_segments(r, timings.get(r["turn_id"], {})) for r in ok]
    first_audio = summary([r["eos_to_first_audio_s"] for r in ok])
    failed = len(results) - len(ok)
    return {
        "sessions": n,
        "seconds": seconds,
        "turns": len(results),
        "turns_done": len(ok),
        "turns_failed": failed,
        "eos_to_first_audio_s": first_audio,
        "eos_to_final_s": summary([r["eos_to_final_s"] for r in ok]),
        "segments_p50_s": {k: median([s[k] for s in segments]) for k in TALK_SEGMENTS},
        "segments_p95_s": {k: pct([s[k] for s in segments], 95) for k in TALK_SEGMENTS},
        "cache_hit_share": round(sum(1 for r in ok if r["cached"]) / len(ok), 2) if ok else None,
        "reply_audio_s_p50": median([r["reply_audio_s"] for r in ok]),
        "lost_events": sum(s["lost"] for s in streams),
        "duplicated_events": sum(s["duplicated"] for s in streams),
        "errors": [e for r in results for e in (r.get("errors") or [])][:10] + [r for r in results if "error" in r][:5],
        "load_average_start": load,
        "holds": bool(ok) and failed == 0 and (first_audio["p95"] or float("inf")) <= TALK_P95_S,
        "slowest": _slowest_turns(ok, segments),
    }


def _slowest_turns(ok: list[dict], segments: list[dict], count: int = 5) -> list[dict]:
    """The turns that make a step's p95: when each started, its question, whether its reply was cached, its segments."""
    began = min((r["t_start"] for r in ok if r.get("t_start")), default=0.0)
    rows = sorted(zip(ok, segments, strict=True), key=lambda pair: -(pair[0]["eos_to_first_audio_s"] or 0.0))[:count]
    return [
        {
            "eos_to_first_audio_s": r["eos_to_first_audio_s"],
            "started_s": round(r["t_start"] - began, 1) if r.get("t_start") else None,
            "utterance": r.get("utterance"),
            "cached": r["cached"],
            "segments_s": seg,
        }
        for r, seg in rows
    ]


def talking(bench: BenchStack, utterances: Sequence[Utterance], ramp: Sequence[int], seconds: float) -> dict:
    """Scenario 9: N sessions conversing (ask, hear the whole reply, wait 2 s, ask again); ramp N until p95 > 1.5 s."""
    steps: dict[str, dict] = {}
    for n in ramp:
        clear_tts_cache(bench)  # each step starts cold; within it the questions repeat, as real ones do
        steps[str(n)] = _talking_step(bench, utterances, n, seconds)
        if not steps[str(n)]["holds"]:
            break
        time.sleep(1.0)
    held = [int(n) for n, s in steps.items() if s["holds"]]
    return {
        "talking_sessions": max(held, default=0),
        "by_sessions": steps,
        "frame_s": TALK_FRAME_S,
        "think_s": TALK_THINK_S,
        "p95_limit_s": TALK_P95_S,
        "diagnosis": talking_diagnosis(steps),
        "method": f"N sessions on their own WebSockets each speak a Piper question (the next of {len(utterances)} "
        "different ones, so replies keep missing the synthesis cache through a step) at real-time pace in "
        f"{TALK_FRAME_S * 1000:.0f} ms frames (push-to-talk, `end` at end of speech), fetch the reply audio, "
        f"listen to all of it (its duration), wait {TALK_THINK_S:g} s and ask again, for {seconds:g} s per step "
        f"(starts spread over the first seconds); N ramps until p95 end of speech -> first audio byte exceeds "
        f"{TALK_P95_S:g} s or a turn fails; talking_sessions = the largest N that held. Segments: recognition = "
        "end of speech -> final transcript (client); dialog queue / tts queue = the stages' recorded queue waits; "
        "dialog = the dialog stage's recorded time; handoff = the rest of final -> reply; first sentence = reply -> first audio event minus the tts "
        "queue wait; fetch = audio event -> first byte",
    }


def talking_diagnosis(steps: dict[str, dict]) -> dict:
    """Which segment grew with the number of sessions, and whether it is queue wait, engine or plumbing."""
    if not steps:
        return {"text": "no step ran"}
    ordered = sorted(steps.values(), key=lambda s: s["sessions"])
    first, last = ordered[0], next((s for s in ordered if not s["holds"]), ordered[-1])
    growth = {
        k: round((last["segments_p95_s"].get(k) or 0.0) - (first["segments_p95_s"].get(k) or 0.0), 4)
        for k in TALK_SEGMENTS
    }
    holder = max(TALK_SEGMENTS, key=lambda k: last["segments_p95_s"].get(k) or 0.0)
    grew = max(TALK_SEGMENTS, key=lambda k: growth[k])
    kind = {
        "recognition": "the STT worker (final decode behind partials and other utterances' decodes)",
        "dialog_queue": "queue wait (the dialog worker's threads are busy)",
        "tts_queue": "queue wait (the synthesis worker's threads are busy)",
        "dialog": "the dialog engine",
        "handoff": "plumbing (recording the turn, events between the stages)",
        "first_sentence": "the synthesis engine (first sentence) and its storage",
        "fetch": "plumbing (the API serving reply audio from GridFS)",
    }
    p95 = last["eos_to_first_audio_s"]["p95"]
    verdict = "held" if last["holds"] else f"missed the {TALK_P95_S:g} s p95 limit"
    parts = ", ".join(f"{k} {_fmt_s(last['segments_p95_s'].get(k))}" for k in TALK_SEGMENTS)
    text = (
        f"At {last['sessions']} session(s) first audio p95 was {_fmt_s(p95)} ({verdict}); segment p95s: {parts}. "
        f"The largest is {holder}: {kind[holder]}."
    )
    if last is not first:
        text += (
            f" From {first['sessions']} to {last['sessions']} session(s) {grew} grew most "
            f"(+{growth[grew]:.3f} s p95): {kind[grew]}."
        )
    slowest = last.get("slowest") or []
    if slowest:
        misses = sum(1 for t in slowest if not t["cached"])
        starts = ", ".join(f"{t['started_s']:g}" for t in slowest if t["started_s"] is not None)
        text += (
            f" Its {len(slowest)} slowest turns: {misses} missed the synthesis cache; they started {starts} s "
            f"into the {last['seconds']:g} s step."
        )
    return {
        "at_sessions": last["sessions"],
        "holds_the_time": holder,
        "grew_most": grew,
        "growth_p95_s": growth,
        "text": text,
    }


def _fmt_s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"
