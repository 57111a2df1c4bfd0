"""One spoken turn through the running stack: HTTP -> Celery workers -> Redis -> MongoDB -> HTTP."""

import io
import wave

import pytest
import redis
import requests

from devstack import turns as turn_client
from tests.support import JFK_TEXT, new_session, shared_file, word_error_rate
from voiceapp.storage.audio import new_audio_id
from voiceapp.tts import fresh
from voiceapp.web.auth import issue_token

pytestmark = pytest.mark.usefixtures("demo_kb")


def _ask(live, audio: bytes, session=None, wait=60):
    session = session or new_session(live.base_url, "demo")
    return session, turn_client.auth(session), turn_client.ask(live.base_url, session, audio, timeout=wait)


def test_real_recording_is_transcribed_answered_and_spoken(live):
    _session, auth, turn = _ask(live, shared_file("jfk.flac").read_bytes())
    assert turn["status"] == "done", turn
    assert word_error_rate(JFK_TEXT, turn["transcript"]) <= 0.15, turn["transcript"]
    assert turn["reply_text"]
    audio = requests.get(f"{live.base_url}{turn['audio_url']}", headers=auth, timeout=30)
    assert audio.status_code == 200
    assert audio.headers["Content-Type"].startswith("audio/wav")
    with wave.open(io.BytesIO(audio.content)) as wav:
        assert wav.getnframes() / wav.getframerate() > 0.3
    for stage in ("stt_s", "dialog_s", "tts_s", "total_s"):
        assert turn["timings"][stage] > 0
    assert 0 <= turn["timings"]["tts_engine_s"] <= turn["timings"]["tts_s"]  # zero when the reply was cached


def test_demo_question_gets_the_knowledge_base_answer(live):
    from voiceapp.demo import QUESTION_WAV

    _, _, turn = _ask(live, QUESTION_WAV.read_bytes())
    assert turn["status"] == "done", turn
    assert "saturday" in turn["transcript"].lower()
    assert "8:00" in turn["reply_text"], turn["reply_text"]
    assert turn["sources"], "the answer names the knowledge it came from"


def test_each_turn_writes_one_interaction(live):
    session, _, turn = _ask(live, shared_file("jfk.flac").read_bytes())
    docs = list(live.db[live.settings.interactions_collection].find({"session_id": session["session_id"]}))
    assert len(docs) == 1
    doc = docs[0]
    assert doc["turn_id"] == turn["turn_id"] and doc["project"] == "demo"
    assert doc["transcript"] == turn["transcript"] and doc["reply_text"] == turn["reply_text"]
    assert doc["timestamp"] is not None


def test_corrupt_audio_is_refused_and_the_server_keeps_serving(live):
    session = new_session(live.base_url, "demo")
    auth = {"Authorization": f"Bearer {session['token']}"}
    url = f"{live.base_url}/api/v1/voice/sessions/{session['session_id']}/turns"
    bad = requests.post(url, data=b"RIFF\x00\x00\x00\x00WAVEjunkjunk" * 10, headers=auth, timeout=10)
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_audio_payload"
    empty = requests.post(url, data=b"", headers=auth, timeout=10)
    assert empty.status_code == 400
    _, _, turn = _ask(live, shared_file("jfk.flac").read_bytes(), session=session)
    assert turn["status"] == "done"


def test_unknown_session_and_wrong_token_get_clear_errors(live):
    a = new_session(live.base_url, "demo")
    b = new_session(live.base_url, "demo")
    base = f"{live.base_url}/api/v1/voice/sessions"
    audio = shared_file("jfk.flac").read_bytes()
    unknown = requests.post(
        f"{base}/{'0' * 32}/turns", data=audio, headers={"Authorization": f"Bearer {a['token']}"}, timeout=10
    )
    assert unknown.status_code == 403 and unknown.json()["error"]["code"] == "token_wrong_session"
    ghost = "f" * 32
    ghost_auth = {"Authorization": f"Bearer {issue_token(live.settings, ghost)}"}
    not_found = requests.post(f"{base}/{ghost}/turns", data=audio, headers=ghost_auth, timeout=10)
    assert not_found.status_code == 404 and not_found.json()["error"]["code"] == "voice_session_not_found"
    foreign = requests.post(
        f"{base}/{b['session_id']}/turns", data=audio, headers={"Authorization": f"Bearer {a['token']}"}, timeout=10
    )
    assert foreign.status_code == 403
    missing = requests.post(f"{base}/{a['session_id']}/turns", data=audio, timeout=10)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
    forged = requests.post(
        f"{base}/{a['session_id']}/turns", data=audio, headers={"Authorization": "Bearer not-a-token"}, timeout=10
    )
    assert forged.status_code == 401 and forged.json()["error"]["code"] == "invalid_token"
    assert requests.get(f"{live.base_url}/healthz", timeout=5).status_code == 200


def test_session_creation_validates_its_fields(live):
    url = f"{live.base_url}/api/v1/voice/sessions"
    assert requests.post(url, data="not json", timeout=5).status_code == 400
    injected = requests.post(url, json={"project": {"$gt": ""}}, timeout=5)
    assert injected.status_code == 400 and injected.json()["error"]["code"] == "invalid_field"
    assert requests.post(url, json={}, timeout=5).status_code == 400
    created = requests.post(url, json={"project": "demo", "language": "en-US"}, timeout=5)
    assert created.status_code == 201
    body = created.json()
    assert set(body) >= {"session_id", "token", "expires_at"}


def test_ended_session_refuses_new_turns(live):
    session = new_session(live.base_url, "demo")
    auth = {"Authorization": f"Bearer {session['token']}"}
    url = f"{live.base_url}/api/v1/voice/sessions/{session['session_id']}"
    assert requests.delete(url, headers=auth, timeout=5).status_code == 204
    refused = requests.post(f"{url}/turns", data=shared_file("jfk.flac").read_bytes(), headers=auth, timeout=10)
    assert refused.status_code == 410
    assert refused.json()["error"]["code"] == "voice_session_expired"


def test_reply_audio_is_served_from_its_redis_copy_until_its_store_lands(live):
    """A chunk's event may go out before its GridFS store lands: the endpoint serves the Redis copy meanwhile,
    to the session that owns it only."""
    owner, other = new_session(live.base_url, "demo"), new_session(live.base_url, "demo")
    client, audio_id = redis.Redis.from_url(live.settings.redis_url), new_audio_id()
    fresh.keep(client, fresh.NewAudio(audio_id, b"RIFF fresh", "audio/wav", owner["session_id"], lambda: None))

    def fetch(session):
        url = f"{live.base_url}/api/v1/voice/sessions/{session['session_id']}/audio/{audio_id}"
        return requests.get(url, headers=turn_client.auth(session), timeout=10)

    served = fetch(owner)
    assert served.status_code == 200 and served.content == b"RIFF fresh"
    assert served.headers["Content-Type"].startswith("audio/wav")
    assert fetch(other).status_code == 404
    client.delete(f"{fresh.PREFIX}:{audio_id}")
    assert fetch(owner).status_code == 404  # no copy, and nothing in GridFS either
