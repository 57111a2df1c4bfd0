"""synthesize_reply against the real MongoDB-wire server and real Piper; ElevenLabs/Azure via local fakes.

Covers sentence chunking, the GridFS cache (hits, key, TTL, removal, size cap), the fallback chain,
cost tracking (per project/session/day, daily alert, budget cap) and a Piper -> Whisper round trip.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import redis
from bson import ObjectId
from prometheus_client import REGISTRY

from migrations import migrate
from tests.fakes import elevenlabs as fake_elevenlabs
from voiceapp.audio import decode, wav_info
from voiceapp.config import Settings
from voiceapp.errors import NotFound, TtsError
from voiceapp.storage.audio import REPLIES_BUCKET, get_audio
from voiceapp.storage.mongo import get_db
from voiceapp.stt import get_engine
from voiceapp.stt.wer import word_errors
from voiceapp.tts import cache, cost, fresh, urgency
from voiceapp.tts.registry import get_provider
from voiceapp.tts.service import ChunkResult, synthesize_reply

XI_KEY = "xi-service-key"
REPLY = "We open at nine on Saturday. Parking is behind the store. Ask at the desk for a ticket."
PRICE = 0.30 / 1000


@pytest.fixture(scope="module")
def eleven_vendor():
    state, server = fake_elevenlabs.start(XI_KEY)
    yield state
    server.shutdown()


@pytest.fixture
def tts_settings(mongo_uri, eleven_vendor) -> Settings:
    """Settings on a fresh, migrated database with the fake ElevenLabs first and piper, then browser, behind it."""
    eleven_vendor.reset()
    cfg = Settings.from_env(
        {},
        mongo_uri=mongo_uri,
        mongo_db=f"tts_{uuid.uuid4().hex[:10]}",
        elevenlabs_api_key=XI_KEY,
        elevenlabs_base_url=eleven_vendor.url,
        tts_timeout=30.0,
        tts_fallback_chain=("piper", "browser"),
    )
    migrate(get_db(cfg), cfg)
    yield cfg
    get_db(cfg).client.drop_database(cfg.mongo_db)


@pytest.fixture
def tts_db(tts_settings):
    """The database of `tts_settings` (the audio cache and its GridFS buckets)."""
    return get_db(tts_settings)


def speak(db, settings, text=REPLY, provider="elevenlabs", project="acme", session_id="s1", **kw):
    chunks: list[ChunkResult] = []
    also = kw.pop("on_chunk", None)

    def on_chunk(chunk: ChunkResult) -> None:
        chunks.append(chunk)
        if also is not None:
            also(chunk)

    result = synthesize_reply(
        db,
        settings,
        text=text,
        voice=kw.pop("voice", None),
        language=kw.pop("language", "en-US"),
        provider_name=provider,
        project=project,
        session_id=session_id,
        on_chunk=on_chunk,
        **kw,
    )
    assert list(result.chunks) == chunks
    return result


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def files(db) -> int:
    return db[f"{REPLIES_BUCKET}.files"].count_documents({})


# ---- chunking ----


def test_next_sentence_is_synthesized_while_the_previous_one_is_published(tts_db, tts_settings, eleven_vendor):
    seen = []

    def on_chunk(chunk: ChunkResult) -> None:
        at_start = len(eleven_vendor.requests)
        if chunk.index == 0:
            # Hold the first publication until the second sentence reached the provider (or give up).
            deadline = time.monotonic() + 30
            while len(eleven_vendor.requests) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
        seen.append((chunk.index, at_start, len(eleven_vendor.requests)))

    result = synthesize_reply(
        tts_db,
        tts_settings,
        text=REPLY,
        language="en-US",
        provider_name="elevenlabs",
        project="acme",
        session_id="s1",
        on_chunk=on_chunk,
    )
    assert [index for index, _, _ in seen] == [0, 1, 2]  # published in order
    assert seen[0][1] >= 1  # the first chunk is published once it exists...
    assert seen[0][2] >= 2  # ...while the second sentence is being synthesized
    assert [c.text for c in result.chunks] == [
        "We open at nine on Saturday.",
        "Parking is behind the store.",
        "Ask at the desk for a ticket.",
    ]
    assert [r.body["text"] for r in eleven_vendor.requests] == [c.text for c in result.chunks]
    first = result.chunks[0]
    assert (first.provider, first.mime_type, first.cached, first.total, first.fallback_from) == (
        "elevenlabs",
        "audio/mpeg",
        False,
        3,
        None,
    )
    assert result.chunks[-1].last and not first.last
    data, info = get_audio(tts_db, first.audio_id, REPLIES_BUCKET)
    assert data == fake_elevenlabs.FAKE_MP3 and info["content_type"] == "audio/mpeg"
    event = first.to_event()
    assert {"index", "total", "audio_id", "provider", "text", "mime_type", "cached", "last"} <= set(event)


def test_a_long_first_sentence_is_spoken_in_two_chunks_the_first_one_a_clause(tts_db, tts_settings):
    """The first audio is the clause before the conjunction, in Piper's voice; the chunks give the reply back."""
    reply = "From Monday to Friday we open at 7:00 am and close at 7:00 pm. The kitchen closes at 6:30 pm."
    result = speak(tts_db, tts_settings, text=reply, provider="piper")
    assert [c.text for c in result.chunks] == [
        "From Monday to Friday we open at 7:00 am",
        "and close at 7:00 pm.",
        "The kitchen closes at 6:30 pm.",
    ]
    uncut = speak(tts_db, tts_settings.replace(tts_first_chunk_chars=0), text=reply, provider="piper").chunks[0]
    assert uncut.text == "From Monday to Friday we open at 7:00 am and close at 7:00 pm."
    head_s, sentence_s = (
        wav_info(get_audio(tts_db, c.audio_id, REPLIES_BUCKET)[0])[2] for c in (result.chunks[0], uncut)
    )
    assert 0 < head_s < sentence_s


def test_empty_reply_is_refused(tts_db, tts_settings):
    with pytest.raises(TtsError):
        speak(tts_db, tts_settings, text="  ")


# ---- cache ----


def test_cache_hit_is_served_without_the_provider_and_touches_accessed_at(tts_db, tts_settings, eleven_vendor):
    hits, misses = metric("voice_audio_cache_hits_total"), metric("voice_audio_cache_misses_total")
    first = speak(tts_db, tts_settings)
    entries = tts_db[tts_settings.audio_cache_collection]
    before = {d["audio_id"]: d["accessed_at"] for d in entries.find()}
    assert len(eleven_vendor.requests) == 3 and first.cache_misses == 3 and first.cache_hits == 0
    second = speak(tts_db, tts_settings, session_id="s2")
    assert len(eleven_vendor.requests) == 3  # the vendor was not called again
    assert second.cache_hits == 3 and all(c.cached for c in second.chunks)
    assert second.audio_ids == first.audio_ids and files(tts_db) == 3
    after = {d["audio_id"]: d["accessed_at"] for d in entries.find()}
    assert all(after[a] > before[a] for a in before)
    assert metric("voice_audio_cache_hits_total") - hits == 3
    assert metric("voice_audio_cache_misses_total") - misses == 3
    doc = entries.find_one({"audio_id": first.audio_ids[0]})
    assert doc["text_hash"] == cache.text_hash("We open at nine on Saturday.")
    assert (doc["voice"], doc["language"], doc["provider"], doc["format"]) == (
        "21m00Tcm4TlvDq8ikWAM",
        "en-us",
        "elevenlabs",
        "mp3_44100_128",
    )
    assert doc["bytes"] == len(fake_elevenlabs.FAKE_MP3) and doc["created_at"] <= doc["accessed_at"]


def test_the_voices_own_time_is_counted_on_a_miss_and_none_on_a_cache_hit(tts_db, tts_settings):
    text = "We close at six on Sunday. The kitchen closes earlier."
    spoken = speak(tts_db, tts_settings, text=text, provider="piper")
    cached = speak(tts_db, tts_settings, text=text, provider="piper", session_id="s2")
    assert spoken.cache_misses == 2 and spoken.provider_seconds > 0
    assert cached.cache_hits == 2 and cached.provider_seconds == 0


def test_cache_key_separates_voice_language_provider_and_format(tts_db, tts_settings, eleven_vendor):
    text = "Hello there."
    speak(tts_db, tts_settings, text=text)
    assert speak(tts_db, tts_settings, text=text, voice="other-voice").cache_hits == 0
    assert speak(tts_db, tts_settings, text=text, language="ru-RU").cache_hits == 0
    assert speak(tts_db, tts_settings.replace(elevenlabs_output_format="wav_22050"), text=text).cache_hits == 0
    assert speak(tts_db, tts_settings, text=text, provider="piper").cache_hits == 0
    assert speak(tts_db, tts_settings, text="Hello   there.").cache_hits == 1  # whitespace does not change speech
    assert len(eleven_vendor.requests) == 4
    assert tts_db[tts_settings.audio_cache_collection].count_documents({}) == 5


def test_cache_off_stores_plain_turn_audio(tts_db, tts_settings, eleven_vendor):
    off = tts_settings.replace(cache_audio=False)
    one = speak(tts_db, off, text="Hi.", turn_id="t1")
    two = speak(tts_db, off, text="Hi.", turn_id="t2")
    assert len(eleven_vendor.requests) == 2 and one.audio_ids != two.audio_ids
    assert tts_db[tts_settings.audio_cache_collection].count_documents({}) == 0
    _data, info = get_audio(tts_db, two.audio_ids[0], REPLIES_BUCKET)
    assert info["metadata"]["cache"] is False and info["metadata"]["turn_id"] == "t2"
    assert info["metadata"]["session_id"] == "s1"


def test_expired_entries_are_not_served_and_prune_deletes_them_with_their_files(tts_db, tts_settings, eleven_vendor):
    old = speak(tts_db, tts_settings, text="Old news.")
    entries = tts_db[tts_settings.audio_cache_collection]
    stale = datetime.now(timezone.utc) - timedelta(seconds=tts_settings.cache_ttl + 5)
    entries.update_many({}, {"$set": {"accessed_at": stale}})
    fresh = speak(tts_db, tts_settings, text="Old news.")
    assert fresh.cache_hits == 0 and len(eleven_vendor.requests) == 2 and files(tts_db) == 2
    # Whether MongoDB's TTL monitor already took the stale entry (emulator: at once) or prune does, the file goes.
    report = cache.prune(
        tts_db, tts_settings, now=datetime.now(timezone.utc) + cache.ORPHAN_GRACE + timedelta(seconds=1)
    )
    assert report["expired"] + report["orphans"] == 1
    assert entries.count_documents({}) == 1 and files(tts_db) == 1
    with pytest.raises(NotFound):
        get_audio(tts_db, old.audio_ids[0], REPLIES_BUCKET)
    assert speak(tts_db, tts_settings, text="Old news.").cache_hits == 1


def test_prune_removes_orphan_cache_files_and_lookup_drops_entries_without_file(tts_db, tts_settings):
    result = speak(tts_db, tts_settings, text="Orphan test.")
    entries = tts_db[tts_settings.audio_cache_collection]
    entries.delete_many({})  # as MongoDB's TTL monitor would
    assert files(tts_db) == 1
    later = datetime.now(timezone.utc) + cache.ORPHAN_GRACE + timedelta(seconds=1)
    assert cache.prune(tts_db, tts_settings, now=later)["orphans"] == 1 and files(tts_db) == 0
    again = speak(tts_db, tts_settings, text="Orphan test.")
    tts_db[f"{REPLIES_BUCKET}.files"].delete_one({"_id": ObjectId(again.audio_ids[0])})
    assert speak(tts_db, tts_settings, text="Orphan test.").cache_hits == 0  # entry without file is a miss
    assert entries.count_documents({}) == 1
    assert result.audio_ids != again.audio_ids


def test_remove_deletes_entries_and_files_together(tts_db, tts_settings):
    speak(tts_db, tts_settings)
    assert files(tts_db) == 3
    assert cache.remove(tts_db, tts_settings, {"provider": "elevenlabs"}) == 3
    assert files(tts_db) == 0 and cache.stats(tts_db, tts_settings) == {"entries": 0, "bytes": 0}


def test_size_cap_evicts_least_recently_used(tts_db, tts_settings, eleven_vendor):
    size = len(fake_elevenlabs.FAKE_MP3)
    capped = tts_settings.replace(cache_max_bytes=2 * size + 10)
    first = speak(tts_db, capped, text="One.")
    second = speak(tts_db, capped, text="Two.")
    assert speak(tts_db, capped, text="One.").cache_hits == 1  # "Two." is now the least recently used
    speak(tts_db, capped, text="Three.")
    assert cache.stats(tts_db, capped) == {"entries": 2, "bytes": 2 * size} and files(tts_db) == 2
    with pytest.raises(NotFound):
        get_audio(tts_db, second.audio_ids[0], REPLIES_BUCKET)
    assert get_audio(tts_db, first.audio_ids[0], REPLIES_BUCKET)[0] == fake_elevenlabs.FAKE_MP3


def test_new_audio_is_stored_on_the_publishing_thread_just_before_its_chunk_is_published(
    tts_db, tts_settings, eleven_vendor, monkeypatch
):
    """The synthesizing thread goes on to the next sentence while the last one's audio is stored and published."""
    stored_on = []
    real_store = cache.store
    monkeypatch.setattr(
        cache, "store", lambda *a, **k: stored_on.append(threading.current_thread().name) or real_store(*a, **k)
    )
    playable = []
    chunks = speak(tts_db, tts_settings).chunks  # REPLY: three sentences, each a cache miss
    for chunk in chunks:  # what a client fetching each chunk's URL got: the audio the chunk names
        playable.append(get_audio(tts_db, chunk.audio_id, REPLIES_BUCKET)[0] == fake_elevenlabs.FAKE_MP3)
    assert stored_on == ["tts-publish"] * 3 and playable == [True] * 3
    published = []
    synthesize_reply(
        tts_db,
        tts_settings,
        text="Brand new sentence one. Brand new sentence two.",
        provider_name="elevenlabs",
        project="acme",
        session_id="s1",
        on_chunk=lambda c: published.append(
            get_audio(tts_db, c.audio_id, REPLIES_BUCKET)[0] == fake_elevenlabs.FAKE_MP3
        ),
    )
    assert published == [True, True]  # each chunk's audio was there when its event went out


def _in_gridfs(db, audio_id: str) -> bool:
    try:
        return get_audio(db, audio_id, REPLIES_BUCKET)[0] == fake_elevenlabs.FAKE_MP3
    except NotFound:
        return False


def test_with_redis_a_chunk_is_published_before_its_store_and_the_reply_returns_after_every_store(
    tts_db, tts_settings, private_redis_url, monkeypatch
):
    """The GridFS store is off the path of the first audio: each chunk is in Redis when its event goes out, its
    store lands behind it, and synthesize_reply returns only once every chunk is stored (the copies dropped)."""
    client, all_published = redis.Redis.from_url(private_redis_url), threading.Event()
    real_store = cache.store
    # The stores wait until the last chunk was published: an event that waited for its store would never come.
    monkeypatch.setattr(cache, "store", lambda *a, **k: all_published.wait(10) and real_store(*a, **k))
    seen = []

    def on_chunk(chunk: ChunkResult) -> None:
        kept = fresh.read(client, chunk.audio_id)
        seen.append((_in_gridfs(tts_db, chunk.audio_id), kept is not None and kept[0] == fake_elevenlabs.FAKE_MP3))
        if chunk.last:
            all_published.set()

    result = speak(tts_db, tts_settings, session_id="s1", fresh=client, on_chunk=on_chunk)
    assert seen == [(False, True)] * 3  # REPLY: three sentences, each published from its Redis copy
    assert all(_in_gridfs(tts_db, a) and fresh.read(client, a) is None for a in result.audio_ids)


def test_when_redis_refuses_the_copy_each_chunk_is_stored_before_its_event(tts_db, tts_settings):
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    seen = []
    speak(tts_db, tts_settings, fresh=dead, on_chunk=lambda c: seen.append(_in_gridfs(tts_db, c.audio_id)))
    assert seen == [True, True, True]


def test_the_cache_size_is_counted_once_per_interval_not_before_every_store(tts_db, tts_settings, monkeypatch):
    counts = []
    real_total = cache.total_bytes
    monkeypatch.setattr(cache, "total_bytes", lambda db, settings: counts.append(1) or real_total(db, settings))
    roomy = tts_settings.replace(cache_max_bytes=10**9)
    for n in range(4):
        assert speak(tts_db, roomy, text=f"Sentence number {n}.").cache_misses == 1
    assert len(counts) == 1  # the first store counted; the next three added their own bytes


# ---- fallback ----


def test_provider_error_falls_back_and_says_who_answered(tts_db, tts_settings, eleven_vendor, caplog):
    eleven_vendor.reset("error")
    before = metric("voice_tts_fallbacks_total", **{"from": "elevenlabs", "to": "piper"})
    with caplog.at_level(logging.WARNING, logger="voiceapp.tts"):
        result = speak(tts_db, tts_settings)
    assert [c.provider for c in result.chunks] == ["piper"] * 3
    assert all(c.fallback_from == "elevenlabs" and c.mime_type == "audio/wav" for c in result.chunks)
    assert len(eleven_vendor.requests) == 1  # a failed provider is not retried for the rest of the reply
    assert [f.provider for f in result.failures] == ["elevenlabs"] and "HTTP 500" in result.failures[0].message
    assert metric("voice_tts_fallbacks_total", **{"from": "elevenlabs", "to": "piper"}) - before == 1
    assert "fell back from elevenlabs to piper" in caplog.text
    assert result.to_doc()["provider"] == "piper" and result.to_doc()["requested_provider"] == "elevenlabs"


def test_timeout_falls_back(tts_db, tts_settings, eleven_vendor):
    eleven_vendor.reset("slow", delay=3.0)
    # The browser voice answers at once: the test does not depend on how fast this machine runs Piper.
    result = speak(
        tts_db, tts_settings.replace(tts_timeout=0.5, tts_fallback_chain=("browser",)), text="Are you there?"
    )
    assert result.chunks[0].provider == "browser" and result.chunks[0].fallback_from == "elevenlabs"
    assert [(f.provider, f.code) for f in result.failures] == [("elevenlabs", "tts_timeout")]


def test_unavailable_provider_falls_back(tts_db, tts_settings):
    result = speak(tts_db, tts_settings, text="Hello.", provider="azure")
    assert result.chunks[0].provider == "piper"
    assert result.failures[0].code == "provider_unavailable" and "AZURE_SPEECH_KEY" in result.failures[0].message


def test_every_provider_failing_is_one_typed_error(tts_db, tts_settings, eleven_vendor):
    eleven_vendor.reset("error")
    with pytest.raises(TtsError) as info:
        speak(tts_db, tts_settings.replace(tts_fallback_chain=("azure",)), text="Hello.")
    assert info.value.code == "tts_unavailable"
    assert "elevenlabs: " in info.value.message and "azure: " in info.value.message


def test_browser_chunks_carry_hints_and_no_audio(tts_db, tts_settings):
    result = speak(tts_db, tts_settings, text="Hello. Goodbye.", provider="browser", language="ru-RU", voice="Milena")
    assert [c.audio_id for c in result.chunks] == [None, None] and files(tts_db) == 0
    assert result.chunks[0].speech == {"text": "Hello.", "lang": "ru-RU", "voice": "Milena"}
    assert result.chunks[0].mime_type is None and result.cost_usd == 0.0


# ---- cost ----


def _analytics(db, settings, **query):
    return list(db[settings.analytics_collection].find(query))


def test_cost_is_recorded_per_project_session_and_day_and_hits_are_free(tts_db, tts_settings):
    first = speak(tts_db, tts_settings, session_id="s1")
    chars = len(REPLY.replace(" We", "We").replace(" Parking", "Parking").replace(" Ask", "Ask"))
    assert first.characters_synthesized == chars
    assert first.cost_usd == pytest.approx(chars * PRICE)
    speak(tts_db, tts_settings, session_id="s2")  # all cache hits
    day = cost.today()
    [s1] = _analytics(tts_db, tts_settings, kind="tts_cost", session_id="s1")
    [s2] = _analytics(tts_db, tts_settings, kind="tts_cost", session_id="s2")
    assert (s1["project"], s1["day"], s1["characters"]) == ("acme", day, chars)
    assert s1["cost_usd"] == pytest.approx(chars * PRICE)
    assert s1["providers"]["elevenlabs"]["characters"] == chars
    assert s2["cost_usd"] == 0 and s2["cached_characters"] == chars
    assert cost.project_cost_today(tts_db, tts_settings, "acme") == pytest.approx(chars * PRICE)
    assert metric("voice_tts_cost_usd_today", project="acme") == pytest.approx(chars * PRICE)
    speak(tts_db, tts_settings, text="Free words.", provider="piper")
    assert cost.project_cost_today(tts_db, tts_settings, "acme") == pytest.approx(chars * PRICE)


def test_prices_are_configurable():
    settings = Settings.from_env({"ELEVENLABS_PRICE_PER_1K_CHARS": "0.18", "AZURE_PRICE_PER_1K_CHARS": "0.015"})
    assert cost.cost_of(settings, "elevenlabs", 2000) == pytest.approx(0.36)
    assert cost.cost_of(settings, "azure", 1000) == pytest.approx(0.015)
    assert cost.cost_of(settings, "piper", 5000) == 0.0 and cost.is_free(settings, "browser")
    flash = settings.replace(elevenlabs_model_id="eleven_flash_v2_5")
    assert cost.cost_of(flash, "elevenlabs", 2000) == pytest.approx(0.18)  # half a credit per character


def test_daily_alert_is_logged_and_emitted_once(tts_db, tts_settings, caplog):
    cheap = tts_settings.replace(cost_alert_threshold=0.005)
    with caplog.at_level(logging.WARNING, logger="voiceapp.tts.cost"):
        first = speak(tts_db, cheap, text="This sentence costs a little money, about one cent in total.")
        second = speak(tts_db, cheap, text="And this one costs a little more money on the same day.")
    assert first.cost_alert and not second.cost_alert
    assert caplog.text.count("TTS cost alert") == 1
    [alert] = _analytics(tts_db, tts_settings, kind="cost_alert")
    assert alert["day"] == cost.today() and alert["threshold"] == 0.005
    assert metric("voice_cost_alert_active") == 1.0
    assert not cost.refresh_alert_gauge(tts_db, cheap, now=datetime.now(timezone.utc) + timedelta(days=1))
    assert metric("voice_cost_alert_active") == 0.0


def test_cost_tracking_off_records_nothing(tts_db, tts_settings):
    off = tts_settings.replace(enable_cost_tracking=False, cost_alert_threshold=0.0, project_daily_budget=0.0001)
    speak(tts_db, off)
    result = speak(tts_db, off, text="Still the paid voice.")
    assert result.chunks[0].provider == "elevenlabs" and not result.budget_capped
    assert _analytics(tts_db, tts_settings) == []


def test_daily_budget_switches_the_project_to_a_free_provider(tts_db, tts_settings, eleven_vendor):
    budget = tts_settings.replace(project_daily_budget=0.01)
    speak(tts_db, budget, text="A reply long enough to use up the whole daily budget of this small project.")
    assert cost.over_budget(tts_db, budget, "acme")
    calls = len(eleven_vendor.requests)
    capped = speak(tts_db, budget, text="Now the free voice speaks.")
    assert capped.budget_capped and capped.chunks[0].provider == "piper" and len(eleven_vendor.requests) == calls
    other = speak(tts_db, budget, text="Now the free voice speaks.", project="other")
    assert not other.budget_capped and other.chunks[0].provider == "elevenlabs"


# ---- Piper for real, checked by ear ----


def test_round_trip_piper_reply_is_understood(tts_db, tts_settings):
    tts_settings = tts_settings.replace(elevenlabs_api_key="")
    count = metric("voice_synthesis_duration_seconds_count", provider="piper")
    text = (
        "Our store is open from nine in the morning until six in the evening. "
        "You can find the pricing page at the top of the website. "
        "The delivery usually takes three to five business days."
    )
    result = speak(tts_db, tts_settings, text=text, provider=None)
    assert [c.provider for c in result.chunks] == ["piper"] * 3 and result.cost_usd == 0.0
    stt = get_engine(tts_settings)
    heard = []
    for chunk in result.chunks:
        data, info = get_audio(tts_db, chunk.audio_id, REPLIES_BUCKET)
        assert info["content_type"] == "audio/wav" and chunk.duration > 1.0
        heard.append(stt.transcribe(decode(data, tts_settings), "en-US").text)
    errors, words = word_errors(text, " ".join(heard))
    assert errors / words <= 0.2, heard
    assert metric("voice_synthesis_duration_seconds_count", provider="piper") - count == 1  # once per reply
    assert speak(tts_db, tts_settings, text=text, provider=None).cache_hits == 3
    assert metric("voice_synthesis_duration_seconds_count", provider="piper") - count == 1  # cache hits: not observed


def test_cache_housekeeping_command(tts_db, tts_settings):
    import json
    import subprocess
    import sys

    speak(tts_db, tts_settings, text="Kept for the command.")
    env = {**tts_settings.to_env(), "PATH": "/usr/bin:/bin"}

    def run(action: str) -> dict:
        done = subprocess.run(
            [sys.executable, "-m", "voiceapp.tts.cache", action],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return json.loads(done.stdout)

    assert run("stats") == {"entries": 1, "bytes": len(fake_elevenlabs.FAKE_MP3)}
    assert run("prune") == {"expired": 0, "orphans": 0, "evicted": 0}
    assert run("clear") == {"removed": 1} and files(tts_db) == 0


def test_chunks_published_as_audio_events_over_real_redis(tts_db, tts_settings):
    """How the TTS stage uses on_chunk: one `audio` event per sentence, in order, replayable."""
    import redis

    from voiceapp.events import EventBus, EventType

    bus = EventBus(redis.Redis.from_url(tts_settings.redis_url), retention_s=60)
    session_id = f"tts-{uuid.uuid4().hex}"

    def publish(chunk: ChunkResult) -> None:
        data = chunk.to_event()
        if chunk.audio_id:
            data["audio_url"] = f"/api/v1/voice/sessions/{session_id}/audio/{chunk.audio_id}"
        bus.publish(session_id, EventType.AUDIO, "turn-1", **data)

    result = synthesize_reply(
        tts_db,
        tts_settings,
        text="Hello there. Welcome back.",
        language="en-US",
        provider_name="elevenlabs",
        project="acme",
        session_id=session_id,
        turn_id="turn-1",
        on_chunk=publish,
    )
    events = bus.replay(session_id)
    assert [e.type for e in events] == [EventType.AUDIO, EventType.AUDIO]
    assert [e.data["index"] for e in events] == [0, 1] and events[1].data["last"] is True
    assert events[0].data["audio_url"].endswith(result.chunks[0].audio_id)
    assert events[0].data["provider"] == "elevenlabs" and events[0].data["text"] == "Hello there."


def test_a_failing_publication_stops_the_synthesis_and_is_raised(tts_db, tts_settings, eleven_vendor):
    class BargedIn(Exception):
        pass

    published = []

    def on_chunk(chunk: ChunkResult) -> None:
        published.append(chunk.index)
        raise BargedIn

    with pytest.raises(BargedIn):
        synthesize_reply(
            tts_db,
            tts_settings,
            text=REPLY,
            language="en-US",
            provider_name="elevenlabs",
            project="acme",
            session_id="s1",
            on_chunk=on_chunk,
        )
    # Nothing after the failure is published, and the third sentence is never synthesized.
    assert published == [0]
    assert len(eleven_vendor.requests) <= 2


def test_only_the_first_sentence_of_a_reply_waits_for_the_voice_as_urgent(tts_db, tts_settings, monkeypatch):
    piper = get_provider(tts_settings, "piper")
    real, asked = piper.synthesize, []

    def spy(text, voice=None, language=None):
        asked.append((text, urgency._URGENT.get()))
        return real(text, voice, language)

    monkeypatch.setattr(piper, "synthesize", spy)
    speak(tts_db, tts_settings, text="Hello there. We open at nine. Welcome back.", provider="piper")
    assert asked == [("Hello there.", True), ("We open at nine.", False), ("Welcome back.", False)]
