"""/metrics after a turn: the seed's metrics, fed from the API and the workers, plus queue depth."""

import re

import pytest
import requests

from devstack.turns import ask
from tests.support import new_session, shared_file

pytestmark = pytest.mark.usefixtures("demo_kb")


def _value(text: str, name: str, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total, found = 0.0, False
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
        if not match:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
            found = True
    assert found, f"{name} {labels} not exported"
    return total


def test_metrics_count_a_turn_in_the_api_and_the_workers(live):
    before = requests.get(f"{live.base_url}/metrics", timeout=10).text
    session = new_session(live.base_url, "demo")
    turn = ask(live.base_url, session, shared_file("jfk.flac").read_bytes())
    assert turn["status"] == "done"
    after = requests.get(f"{live.base_url}/metrics", timeout=10).text

    def grew(name, **labels):
        old = _value(before, name, **labels) if name in before else 0.0
        return _value(after, name, **labels) - old

    assert grew("voice_sessions_created_total") >= 1
    assert grew("voice_interactions_total") >= 1
    assert grew("voice_recognition_duration_seconds_count", engine="faster-whisper") >= 1
    # Once per reply, provider time only: a reply spoken wholly from the cache (earlier tests asked the same) is not.
    tts = live.db[live.settings.interactions_collection].find_one({"_id": turn["turn_id"]})["tts"]
    assert grew("voice_synthesis_duration_seconds_count") == (1 if tts["characters_synthesized"] else 0)
    assert _value(after, "voice_sessions_active") >= 1
    for queue in ("stt", "dialog", "tts"):
        assert _value(after, "voice_queue_depth", queue=queue) >= 0
    cache_lookups = _value(after, "voice_audio_cache_hits_total") + _value(after, "voice_audio_cache_misses_total")
    assert cache_lookups >= 0  # exported from the start, fed by the TTS worker's cache


def test_single_process_metrics_export_every_voiceapp_metric(live):
    from voiceapp import create_app

    text = create_app(live.settings).test_client().get("/metrics").get_data(as_text=True)
    for name in (
        "voice_sessions_created_total",
        "voice_interactions_total",
        "voice_audio_cache_hits_total",
        "voice_cost_alert_active",
        "voice_sessions_active",
        "voice_queue_depth",
    ):
        assert re.search(rf"^{name}(\{{.*\}})? ", text, re.M), name
