"""Benchmark: time to first audio of synthesize_reply on a cache miss vs a hit, and the hit/miss ratio.

Replays a stream of replies in which popular answers repeat (Zipf-like, as FAQ-style sites do),
through the real service: MongoDB-wire server (or MONGO_URI), GridFS cache, Piper (or --provider).

    .venv/bin/python bench/tts_cache.py [--replies 60] [--provider piper] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prometheus_client import REGISTRY  # noqa: E402

import devstack as stack  # noqa: E402
from voiceapp.config import Settings  # noqa: E402
from voiceapp.storage.mongo import get_db  # noqa: E402
from voiceapp.tts import registry  # noqa: E402
from voiceapp.tts.service import synthesize_reply  # noqa: E402

ANSWERS = [
    "We are open from nine in the morning until six in the evening. On Sundays we close at four.",
    "You can reset your password from the login page. Click forgot password and follow the email.",
    "Delivery usually takes three to five business days. Express delivery arrives the next day.",
    "The pricing page is at the top of the website. Plans start at ten dollars a month.",
    "Parking is free behind the store. Ask at the front desk for a ticket.",
    "Our support team answers chat messages within an hour. Phone support is open on weekdays.",
    "You can return any item within thirty days. Keep the receipt and the original box.",
    "We ship to most countries in Europe. Customs fees are paid by the customer.",
    "Gift cards are sold in the store and online. They never expire.",
    "The warranty covers two years of normal use. Accidental damage is not included.",
    "Students get a ten percent discount. Show a valid student card at checkout.",
    "Our office is on the third floor. The elevator is next to the main entrance.",
]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) in milliseconds."""
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))], 1)


def summary(values: list[float]) -> dict:
    """n, p50, p95, mean (ms)."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": percentile(values, 50),
        "p95_ms": percentile(values, 95),
        "mean_ms": round(1000 * statistics.fmean(values), 1),
    }


def start_mongo() -> tuple[subprocess.Popen, str]:
    """A memory-engine wire server on a free port."""
    proc = subprocess.Popen(
        [
            stack.find_mongo_python(),
            str(stack.WIRE_SERVER),
            "--port",
            str(stack.free_port()),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if not line.startswith("ready "):
        raise SystemExit(f"wire server did not start: {line!r}")
    return proc, line.split()[1]


def run(settings: Settings, replies: int, provider: str, seed: int) -> dict:
    """Replay `replies` answers; time each one's first chunk."""
    db = get_db(settings)
    registry.warm(settings.replace(tts_default_provider=provider))
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(len(ANSWERS))]
    ttfa = {"miss": [], "hit": []}
    totals = {"miss": [], "hit": []}
    for _ in range(replies):
        text = rng.choices(ANSWERS, weights)[0]
        started = time.perf_counter()
        first: list[float] = []
        result = synthesize_reply(
            db,
            settings,
            text=text,
            language="en-US",
            provider_name=provider,
            project="bench",
            session_id="bench",
            on_chunk=lambda c, first=first, started=started: first or first.append(time.perf_counter() - started),
        )
        kind = "hit" if result.chunks[0].cached else "miss"
        ttfa[kind].append(first[0])
        totals[kind].append(time.perf_counter() - started)
    hits, misses = len(ttfa["hit"]), len(ttfa["miss"])
    synth_n = REGISTRY.get_sample_value("voice_synthesis_duration_seconds_count", {"provider": provider}) or 0
    synth_s = REGISTRY.get_sample_value("voice_synthesis_duration_seconds_sum", {"provider": provider}) or 0
    return {
        "provider": provider,
        "replies": replies,
        "distinct_answers": len(ANSWERS),
        "hit_ratio": round(hits / replies, 3),
        "hits": hits,
        "misses": misses,
        "time_to_first_audio": {"miss": summary(ttfa["miss"]), "hit": summary(ttfa["hit"])},
        "whole_reply": {"miss": summary(totals["miss"]), "hit": summary(totals["hit"])},
        # Provider time alone (voice_synthesis_duration_seconds: once per reply that was not wholly cached).
        "provider_seconds_per_reply": {"n": int(synth_n), "mean_ms": round(1000 * synth_s / max(1, synth_n), 1)},
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, start what is needed, print the result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replies", type=int, default=60)
    parser.add_argument("--provider", default="piper")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    base = Settings.from_env()
    proc = None
    if not base.mongo_uri:
        proc, uri = start_mongo()
        base = base.replace(mongo_uri=uri)
    settings = base.replace(mongo_db=f"bench_tts_{uuid.uuid4().hex[:8]}", enable_cost_tracking=False)
    try:
        result = run(settings, args.replies, args.provider, args.seed)
    finally:
        get_db(settings).client.drop_database(settings.mongo_db)
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
