"""Speculative reply (issue 15) on real Redis, the MongoDB-wire server and the shipped Piper voice: the reply
prepared at a pause puts its first sentence in the audio cache and nothing anywhere else; the TTS stage of the
turn that ends with the same words speaks it from there and says so; other words drop it; paid voices wait.

The preparation's two halves and the TTS stage are called directly (no worker), as tests/test_stage_claims.py
calls the stages; tests/test_live_stt.py runs the same through the whole stack.
"""

from __future__ import annotations

import time
import uuid

import pytest

import migrations
from tests.fakes import elevenlabs as fake_elevenlabs
from voiceapp import metrics, speculative, stages
from voiceapp.config import Settings
from voiceapp.dialog.answer import fallback_reply
from voiceapp.dialog.knowledge import load_demo
from voiceapp.models import Transcript
from voiceapp.runtime import Runtime
from voiceapp.storage import interactions, sessions
from voiceapp.storage.mongo import get_client, get_db
from voiceapp.tts import cache
from voiceapp.tts.prepare import first_sentence, prepare_first_sentence
from voiceapp.turns import TurnRef, TurnStatus

pytestmark = pytest.mark.timeout(180)

UNKNOWN = "Do you sell helicopters?"  # not in the demo knowledge base: the dialog stage would list it as unanswered
HOURS = "What time do you open on Saturday?"
VENDOR_KEY = "sk-speculative-test-0123456789abcdef"


@pytest.fixture
def spec_rt(mongo_uri, private_redis_url):
    """A Runtime on a fresh migrated database holding the demo knowledge base, and a flushed Redis."""
    settings = Settings.from_env(
        {}, mongo_uri=mongo_uri, mongo_db=f"spec_{uuid.uuid4().hex[:10]}", redis_url=private_redis_url
    )
    migrations.migrate(get_db(settings), settings)
    rt = Runtime(settings)
    rt.redis.flushdb()
    load_demo(rt.db, settings, "demo")
    yield rt
    get_client(settings).drop_database(settings.mongo_db)


def _offer(rt: Runtime, text: str) -> TurnRef:
    """A session's utterance whose speculative transcript is `text`, offered as the live STT task does."""
    session = sessions.create_session(rt.db, rt.settings, "demo", "en-US", "")
    ref = TurnRef(session_id=session["session_id"], turn_id=uuid.uuid4().hex, mode="hands_free")
    speculative.Speculation(rt, ref, "en-US").offer(Transcript(text, language="en", final=False))
    return ref


def _prepare(rt: Runtime, ref: TurnRef, text: str) -> dict:
    """What the two prepare tasks do (the dialog half's enqueue reaches no worker here)."""
    out = speculative.prepare_reply(rt, {"session_id": ref.session_id, "turn_id": ref.turn_id, "text": text})
    assert out is not None
    assert speculative.prepare_speech(rt, out)
    return out


def _cached(rt: Runtime) -> list[dict]:
    return list(rt.db[rt.settings.audio_cache_collection].find({}, {"text_hash": 1, "provider": 1}))


def _answered_turn(rt: Runtime, ref: TurnRef, transcript: str) -> None:
    """The utterance became a turn with these words and its dialog stage answered them."""
    session = sessions.get_session(rt.db, rt.settings, ref.session_id)
    interactions.create_turn(
        rt.db,
        rt.settings,
        session,
        None,
        turn_id=ref.turn_id,
        status=TurnStatus.RECOGNIZED.value,
        transcript=transcript,
        accepted_at=time.time(),
        stt={"engine": "faster-whisper", "language": "en"},
    )
    stages.run_dialog(rt, ref)


def _prepared_count(outcome: str) -> float:
    return metrics.PREPARED_REPLIES.labels(outcome=outcome)._value.get()


def test_a_prepared_reply_puts_its_first_sentence_in_the_cache_and_nothing_else(spec_rt):
    rt = spec_rt
    ref = _offer(rt, UNKNOWN)
    out = _prepare(rt, ref, UNKNOWN)
    assert out["reply"] == fallback_reply("en").text, "the words the dialog stage would refuse"
    entries = _cached(rt)
    assert [e["text_hash"] for e in entries] == [cache.text_hash(first_sentence(rt.settings, out["reply"]))]
    assert entries[0]["provider"] == "piper"
    assert rt.events.replay(ref.session_id) == [], "a preparation publishes nothing"
    for name in ("interactions_collection", "unanswered_collection", "analytics_collection"):
        assert rt.db[getattr(rt.settings, name)].count_documents({}) == 0, name


def test_the_turn_with_the_same_words_speaks_the_prepared_sentence_from_the_cache(spec_rt):
    rt = spec_rt
    ref = _offer(rt, HOURS)
    out = _prepare(rt, ref, HOURS)
    used = _prepared_count("used")
    _answered_turn(rt, ref, HOURS)
    stages.run_tts(rt, ref)
    turn = interactions.get_turn(rt.db, rt.settings, ref.session_id, ref.turn_id)
    assert turn["reply_text"] == out["reply"], "the preparation answered as the dialog stage did"
    first = turn["tts"]["events"][0]
    assert first["cached"] and first["text"] == first_sentence(rt.settings, out["reply"])
    assert turn["tts"]["prepared"] == "used" and _prepared_count("used") == used + 1
    assert not rt.redis.exists(f"voice:prepared:{ref.turn_id}"), "settled once"


def test_a_turn_that_went_on_after_the_pause_drops_the_prepared_reply(spec_rt):
    rt = spec_rt
    ref = _offer(rt, UNKNOWN)
    out = _prepare(rt, ref, UNKNOWN)
    dropped = _prepared_count("dropped")
    said = f"{UNKNOWN} {HOURS}"
    _answered_turn(rt, ref, said)
    stages.run_tts(rt, ref)
    turn = interactions.get_turn(rt.db, rt.settings, ref.session_id, ref.turn_id)
    assert turn["reply_text"] != out["reply"]
    assert turn["tts"]["prepared"] == "dropped" and _prepared_count("dropped") == dropped + 1
    texts = [e.data.get("text") for e in rt.events.replay(ref.session_id) if e.type in ("reply", "audio")]
    assert out["reply"] not in texts and first_sentence(rt.settings, out["reply"]) not in texts


def test_nothing_is_offered_when_switched_off_unfinished_or_behind(spec_rt):
    off = Runtime(spec_rt.settings.replace(speculative_reply="off"))
    ref = _offer(off, HOURS)
    assert not off.redis.exists(f"voice:prepared:{ref.turn_id}")
    unfinished = _offer(spec_rt, "What time do you open on")
    assert not spec_rt.redis.exists(f"voice:prepared:{unfinished.turn_id}")
    offered = _offer(spec_rt, HOURS)
    assert spec_rt.redis.hkeys(f"voice:prepared:{offered.turn_id}") == [HOURS.encode()]
    # That offer's task now waits in the dialog queue (no worker here): the workers are behind, so no more offers.
    assert spec_rt.redis.llen("dialog") == 1
    behind = _offer(spec_rt, HOURS)
    assert not spec_rt.redis.exists(f"voice:prepared:{behind.turn_id}")


def test_an_unpunctuated_question_is_offered(spec_rt):
    """Whisper often writes a short question without its question mark: the words, not the mark, decide."""
    bare = _offer(spec_rt, "is there free wifi in the shop")
    assert spec_rt.redis.hkeys(f"voice:prepared:{bare.turn_id}") == [b"is there free wifi in the shop"]


def test_a_paid_voice_is_prepared_only_when_switched_on(spec_rt):
    state, server = fake_elevenlabs.start(VENDOR_KEY)
    try:
        paid = spec_rt.settings.replace(
            tts_default_provider="elevenlabs", elevenlabs_api_key=VENDOR_KEY, elevenlabs_base_url=state.url
        )
        args = {"text": "We open at nine.", "voice": None, "language": "en-US", "provider_name": None}
        args |= {"project": "demo", "session_id": uuid.uuid4().hex}
        assert speculative.enabled(paid), "auto prepares the (free) extractive dialog"
        assert prepare_first_sentence(spec_rt.db, paid, paid=False, **args) is None
        assert state.requests == [] and _cached(spec_rt) == []
        prepared = prepare_first_sentence(spec_rt.db, paid, paid=True, **args)
        assert prepared is not None and prepared.provider == "elevenlabs" and len(state.requests) == 1
        spent = spec_rt.db[paid.analytics_collection].find_one({"kind": "tts_cost_project_day", "project": "demo"})
        assert spent is not None and spent["cost_usd"] > 0, "what a paid preparation costs is counted"
    finally:
        server.shutdown()
