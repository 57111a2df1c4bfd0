"""Turn overhead on a private stack: what the pipeline adds around its three engines (median of N turns).

    .venv/bin/python -m bench.turn_overhead --turns 10

For each turn (one session, HTTP upload of jfk.flac as the 16 kHz PCM16 WAV the bench scenarios send, events over
the WebSocket): `post_s` is the
POST until its 202 (decode, store, enqueue), `turn_s` the POST until the `done` event, `engines_s` the
stt + dialog + tts seconds the stages recorded, `overhead_s = turn_s - engines_s` (queue hops, MongoDB,
event relay), `server_overhead_s` the same from the workers' own clock (accepted -> done) and `queue_wait_s`
the three queue hops. A warm-up turn is not counted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import requests
import websocket

from bench import harness
from voiceapp.audio import decode, to_wav

CLIP = Path(__file__).resolve().parents[1] / "tests" / "data" / "jfk.flac"


def one_turn(bench: harness.BenchStack, session: dict, ws: websocket.WebSocket, audio: bytes) -> dict:
    """Post one utterance and wait for its `done` event; the timings of that turn."""
    auth = {"Authorization": f"Bearer {session['token']}"}
    url = f"{bench.base_url}/api/v1/voice/sessions/{session['session_id']}/turns"
    started = time.perf_counter()
    response = requests.post(url, data=audio, headers={**auth, "Content-Type": "audio/wav"}, timeout=60)
    posted = time.perf_counter() - started
    response.raise_for_status()
    turn_id = response.json()["turn_id"]
    while True:
        event = json.loads(ws.recv())
        if event.get("turn_id") == turn_id and event.get("type") in ("done", "error"):
            break
    turn_s = time.perf_counter() - started
    doc = requests.get(f"{url}/{turn_id}", headers=auth, timeout=30).json()
    timings = doc.get("timings", {})
    engines = sum(float(timings.get(k) or 0.0) for k in ("stt_s", "dialog_s", "tts_s"))
    return {
        "status": doc.get("status"),
        "post_s": posted,
        "turn_s": turn_s,
        "engines_s": engines,
        "overhead_s": turn_s - engines,
        # Accepted -> done as the workers recorded it, minus the engines: hops and MongoDB, no HTTP or relay.
        "server_overhead_s": float(timings.get("total_s") or 0.0) - engines,
        "queue_wait_s": sum(float(timings.get(k) or 0.0) for k in ("stt_queue_s", "dialog_queue_s", "tts_queue_s")),
    }


def measure(turns: int) -> dict:
    """Start a stack, run `turns` + 1 turns, stop it; medians of the counted ones."""
    bench = harness.start()
    try:
        session = harness.new_session(bench.base_url)
        ws_url = "ws" + bench.base_url[len("http") :]
        ws = websocket.create_connection(
            f"{ws_url}/api/v1/voice/ws/{session['session_id']}?token={session['token']}", timeout=60
        )
        decoded = decode(CLIP.read_bytes(), bench.settings)
        audio = to_wav(decoded.samples, decoded.sample_rate)
        results = [one_turn(bench, session, ws, audio) for _ in range(turns + 1)][1:]
        ws.close()
    finally:
        harness.stop(bench)
    keys = ("post_s", "turn_s", "engines_s", "overhead_s", "server_overhead_s", "queue_wait_s")
    return {
        "turns": len(results),
        "statuses": sorted({r["status"] for r in results}),
        **{f"{k[:-2]}_median_s": round(statistics.median(r[k] for r in results), 4) for k in keys},
        "load_average": harness.load_average(),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, measure, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=10)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.turns), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
