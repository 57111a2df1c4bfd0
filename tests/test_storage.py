"""Storage against a real MongoDB wire server: client, sessions, turns, GridFS audio."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

import devstack as stack
from voiceapp.config import Settings
from voiceapp.errors import NotFound, SessionExpired, SessionNotFound, StorageUnavailable
from voiceapp.storage import audio, interactions, sessions
from voiceapp.storage.mongo import get_db, ping


@pytest.fixture
def db(db_settings):
    """The fresh database of `db_settings`."""
    return get_db(db_settings)


# ------------------------------------------------------------------ client


def test_get_db_caches_one_tz_aware_client_per_uri(db_settings):
    db = get_db(db_settings)
    assert db.name == db_settings.mongo_db
    assert get_db(db_settings).client is db.client
    assert db.client.codec_options.tz_aware
    ping(db_settings)


def test_ping_raises_storage_unavailable_without_leaking_the_password():
    settings = Settings.from_env(
        {}, mongo_uri=f"mongodb://u:s3cr3t@127.0.0.1:{stack.free_port()}/?directConnection=true"
    )
    with pytest.raises(StorageUnavailable) as caught:
        ping(settings)
    assert "s3cr3t" not in caught.value.message and "unavailable" in caught.value.message
    assert caught.value.status == 503


def test_missing_mongo_uri_is_a_clear_error():
    with pytest.raises(StorageUnavailable, match="MONGO_URI"):
        get_db(Settings.from_env({}))


# ------------------------------------------------------------------ sessions


def test_create_and_get_session(db, db_settings):
    created = sessions.create_session(db, db_settings, "demo", "en-US", "joe", user_id="u1")
    assert len(created["session_id"]) == 32 and created["status"] == "active"
    assert created["expires_at"] - created["created_at"] == timedelta(seconds=db_settings.session_timeout)
    found = sessions.get_session(db, db_settings, created["session_id"])
    assert found["project"] == "demo" and found["user_id"] == "u1" and "_id" not in found
    assert found["expires_at"].tzinfo is not None


def test_expired_session_is_refused_before_the_ttl_monitor_removes_it(db, db_settings):
    # The emulator applies TTL on access; without the index the document stays, as on a real
    # MongoDB during the up-to-60 s before its TTL monitor runs.
    db[db_settings.sessions_collection].drop_index([("expires_at", 1)])
    created = sessions.create_session(db, db_settings, "demo", "en-US", "joe")
    past = sessions.utcnow() - timedelta(seconds=5)
    db[db_settings.sessions_collection].update_one(
        {"session_id": created["session_id"]}, {"$set": {"expires_at": past}}
    )
    with pytest.raises(SessionExpired):
        sessions.get_session(db, db_settings, created["session_id"])
    with pytest.raises(SessionExpired):
        sessions.touch_session(db, db_settings, created["session_id"])
    assert db[db_settings.sessions_collection].count_documents({"session_id": created["session_id"]}) == 1


def test_session_timeout_setting_sets_the_expiry(db, db_settings):
    created = sessions.create_session(db, db_settings.replace(session_timeout=1), "demo", "en-US", "joe")
    assert created["expires_at"] - created["created_at"] == timedelta(seconds=1)


def test_ended_session_is_refused_and_end_is_idempotent(db, db_settings):
    created = sessions.create_session(db, db_settings, "demo", "en-US", "joe")
    ended = sessions.end_session(db, db_settings, created["session_id"])
    assert ended["status"] == "ended" and ended["ended_at"] is not None
    assert sessions.end_session(db, db_settings, created["session_id"])["status"] == "ended"
    with pytest.raises(SessionExpired):
        sessions.get_session(db, db_settings, created["session_id"])
    with pytest.raises(SessionNotFound):
        sessions.end_session(db, db_settings, uuid.uuid4().hex)


@pytest.mark.parametrize(
    "bad_id",
    ["", "abc", "0" * 33, "A" * 32, "../../etc/passwd", {"$ne": None}, {"$gt": ""}, ["x"], None, 42],
)
def test_malformed_or_operator_session_ids_are_not_found(db, db_settings, bad_id):
    sessions.create_session(db, db_settings, "demo", "en-US", "joe")  # something an injection could match
    with pytest.raises(SessionNotFound):
        sessions.get_session(db, db_settings, bad_id)
    with pytest.raises(SessionNotFound):
        sessions.touch_session(db, db_settings, bad_id)


def test_unknown_session_is_not_found(db, db_settings):
    with pytest.raises(SessionNotFound) as caught:
        sessions.get_session(db, db_settings, uuid.uuid4().hex)
    assert caught.value.code == "voice_session_not_found" and caught.value.status == 404


def test_touch_slides_expiry(db, db_settings):
    created = sessions.create_session(db, db_settings.replace(session_timeout=60), "demo", "en-US", "joe")
    touched = sessions.touch_session(db, db_settings.replace(session_timeout=7200), created["session_id"])
    assert touched["expires_at"] - touched["last_activity_at"] == timedelta(seconds=7200)
    assert touched["expires_at"] > created["expires_at"]


def test_count_active_sessions_ignores_ended_and_expired(db, db_settings):
    keep = sessions.create_session(db, db_settings, "demo", "en-US", "joe")
    ended = sessions.create_session(db, db_settings, "demo", "en-US", "joe")
    sessions.create_session(db, db_settings, "other", "en-US", "joe")
    sessions.end_session(db, db_settings, ended["session_id"])
    assert sessions.count_active_sessions(db, db_settings) == 2
    assert sessions.count_active_sessions(db, db_settings, "demo") == 1
    assert keep["status"] == "active"


# ------------------------------------------------------------------ turns


def test_turn_lifecycle(db, db_settings):
    session = sessions.create_session(db, db_settings, "demo", "en-US", "joe")
    turn_id = interactions.create_turn(db, db_settings, session, "a" * 24)
    turn = interactions.get_turn(db, db_settings, session["session_id"], turn_id)
    assert turn["status"] == "queued" and turn["project"] == "demo" and turn["upload_id"] == "a" * 24
    interactions.update_turn(db, db_settings, turn_id, status="done", transcript="hello")
    interactions.update_turn(db, db_settings, turn_id, status="done", transcript="hello")
    turn = interactions.get_turn(db, db_settings, session["session_id"], turn_id)
    assert turn["status"] == "done" and turn["transcript"] == "hello"
    assert db[db_settings.interactions_collection].count_documents({}) == 1


def test_turn_of_another_session_is_not_found(db, db_settings):
    mine = sessions.create_session(db, db_settings, "demo", "en-US", "joe")
    other = sessions.create_session(db, db_settings, "demo", "en-US", "joe")
    turn_id = interactions.create_turn(db, db_settings, mine, None)
    with pytest.raises(NotFound):
        interactions.get_turn(db, db_settings, other["session_id"], turn_id)
    with pytest.raises(NotFound):
        interactions.get_turn(db, db_settings, mine["session_id"], {"$ne": None})
    with pytest.raises(NotFound):
        interactions.update_turn(db, db_settings, uuid.uuid4().hex, status="done")


def test_update_turn_refuses_identity_fields_and_operators(db, db_settings):
    session = sessions.create_session(db, db_settings, "demo", "en-US", "joe")
    turn_id = interactions.create_turn(db, db_settings, session, None)
    for field in ("session_id", "project", "$set"):
        with pytest.raises(ValueError):
            interactions.update_turn(db, db_settings, turn_id, **{field: "x"})


def test_recent_turns_are_the_last_ones_oldest_first(db, db_settings):
    session = sessions.create_session(db, db_settings, "demo", "en-US", "joe")
    ids = []
    for n in range(5):
        ids.append(interactions.create_turn(db, db_settings, session, None, transcript=f"q{n}"))
        db[db_settings.interactions_collection].update_one(
            {"_id": ids[-1]}, {"$set": {"timestamp": sessions.utcnow() + timedelta(seconds=n)}}
        )
    recent = interactions.recent_turns(db, db_settings, session["session_id"], 3)
    assert [t["transcript"] for t in recent] == ["q2", "q3", "q4"]
    without_last = interactions.recent_turns(db, db_settings, session["session_id"], 3, exclude_turn_id=ids[-1])
    assert [t["transcript"] for t in without_last] == ["q1", "q2", "q3"]
    assert interactions.recent_turns(db, db_settings, session["session_id"], 0) == []


# ------------------------------------------------------------------ GridFS audio


def test_put_and_get_audio_round_trip(db):
    data = bytes(range(256)) * 1200  # several GridFS chunks
    audio_id = audio.put_audio(
        db, data, bucket=audio.UPLOADS_BUCKET, filename="turn.webm", content_type="audio/webm", metadata={"turn": "t1"}
    )
    assert len(audio_id) == 24
    got, info = audio.get_audio(db, audio_id, audio.UPLOADS_BUCKET)
    assert got == data
    assert info["content_type"] == "audio/webm" and info["metadata"]["turn"] == "t1"
    assert info["length"] == len(data) and info["filename"] == "turn.webm"
    assert db["voice_uploads.files"].count_documents({}) == 1


def test_audio_is_only_found_in_its_own_bucket(db):
    audio_id = audio.put_audio(db, b"RIFF", bucket=audio.REPLIES_BUCKET, filename="r.wav", content_type="audio/wav")
    with pytest.raises(NotFound):
        audio.get_audio(db, audio_id, audio.UPLOADS_BUCKET)
    assert audio.get_audio(db, audio_id, audio.REPLIES_BUCKET)[0] == b"RIFF"


@pytest.mark.parametrize("bad_id", ["0" * 24, "zz" * 12, "abc", "../" * 8, "0" * 25, {"$ne": None}, None])
def test_unknown_or_malformed_audio_ids_are_not_found(db, bad_id):
    with pytest.raises(NotFound) as caught:
        audio.get_audio(db, bad_id, audio.REPLIES_BUCKET)
    assert caught.value.code == "audio_not_found" and caught.value.status == 404


def test_delete_audio(db):
    audio_id = audio.put_audio(db, b"x" * 10, bucket=audio.REPLIES_BUCKET, filename="r.wav", content_type="audio/wav")
    assert audio.delete_audio(db, audio_id, audio.REPLIES_BUCKET) is True
    assert audio.delete_audio(db, audio_id, audio.REPLIES_BUCKET) is False
    with pytest.raises(NotFound):
        audio.get_audio(db, audio_id, audio.REPLIES_BUCKET)
    assert db["voice_audio.chunks"].count_documents({}) == 0


def test_unknown_bucket_is_a_programming_error(db):
    with pytest.raises(ValueError):
        audio.put_audio(db, b"x", bucket="fs", filename="x", content_type="audio/wav")
