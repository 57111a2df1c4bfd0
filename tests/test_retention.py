"""Privacy (issue 16): visitor recordings follow VOICE_RECORDING_RETENTION, and a visitor's session can be erased."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta

import pytest
import requests

import devstack as stack
from tests.support import shared_file
from voiceapp.config import Settings, SettingsError
from voiceapp.storage import interactions, retention, sessions, unanswered
from voiceapp.storage.audio import REPLIES_BUCKET, UPLOADS_BUCKET, put_audio
from voiceapp.storage.projects import create_key

API = "/api/v1/voice"


def _visitor(app, project="demo", age_s: float = 0) -> dict:
    """A session with one turn: its recording, an uncached reply and its events, dated `age_s` seconds ago."""
    db, settings = app.db, app.settings
    session = sessions.create_session(db, settings, project, "en-US", "")
    sid = session["session_id"]
    upload = put_audio(
        db,
        b"RIFF-recording",
        bucket=UPLOADS_BUCKET,
        filename="u.wav",
        content_type="audio/wav",
        metadata={"session_id": sid, "source": "http"},
    )
    turn_id = interactions.create_turn(db, settings, session, upload, transcript="my phone number is 555")
    reply = put_audio(
        db,
        b"reply-audio",
        bucket=REPLIES_BUCKET,
        filename="r.wav",
        content_type="audio/wav",
        metadata={"cache": False, "session_id": sid, "turn_id": turn_id},
    )
    app.app.extensions["voiceapp"].events.publish(sid, "transcript", turn_id, text="my phone number is 555", final=True)
    unanswered.record(db, settings, project, "can you call me on 555?", sid, turn_id)  # a refused question
    if age_s:
        past = sessions.utcnow() - timedelta(seconds=age_s)
        for bucket in (UPLOADS_BUCKET, REPLIES_BUCKET):
            db[f"{bucket}.files"].update_many({"metadata.session_id": sid}, {"$set": {"uploadDate": past}})
    return {"session_id": sid, "turn_id": turn_id, "upload": upload, "reply": reply}


def _exists(app, bucket: str, file_id: str) -> bool:
    from bson import ObjectId

    return app.db[f"{bucket}.files"].find_one({"_id": ObjectId(file_id)}) is not None


def _left(app, visitor: dict) -> dict:
    sid = visitor["session_id"]
    return {
        "recording": _exists(app, UPLOADS_BUCKET, visitor["upload"]),
        "reply": _exists(app, REPLIES_BUCKET, visitor["reply"]),
        "turns": app.db[app.settings.interactions_collection].count_documents({"session_id": sid}),
        "session": app.db[app.settings.sessions_collection].count_documents({"session_id": sid}),
        "events": len(list(app.redis.scan_iter(match=f"voiceapp:events:{sid}:*"))),
        "unanswered": app.db[app.settings.unanswered_collection].count_documents({"session_id": sid}),
    }


def test_erase_api_deletes_one_visitors_session_turns_audio_and_events(front):
    app = front(open_projects=("demo",))
    key = create_key(app.db, app.settings, "demo")
    target, bystander = _visitor(app), _visitor(app)
    event_keys = _left(app, target)["events"]
    assert event_keys >= 2  # the replay stream holds the transcript
    url = f"{app.base_url}{API}/projects/demo/sessions/{target['session_id']}"
    assert requests.delete(url, timeout=10).status_code == 401  # the project key is required, even for open projects
    assert requests.delete(url, headers={"Authorization": "Bearer vk_wrong"}, timeout=10).status_code == 403
    other_key = create_key(app.db, app.settings, "beta")
    wrong_project = f"{app.base_url}{API}/projects/beta/sessions/{target['session_id']}"
    refused = requests.delete(wrong_project, headers={"Authorization": f"Bearer {other_key}"}, timeout=10)
    assert refused.status_code == 404  # another project's key cannot erase (or probe) this session
    erased = requests.delete(url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert erased.status_code == 200, erased.text
    assert erased.json()["erased"] == {
        "recordings": 1,
        "replies": 1,
        "turns": 1,
        "sessions": 1,
        "unanswered": 1,
        "event_keys": event_keys,
    }
    gone = {"recording": False, "reply": False, "turns": 0, "session": 0, "events": 0, "unanswered": 0}
    assert _left(app, target) == gone
    kept = {"recording": True, "reply": True, "turns": 1, "session": 1, "events": event_keys, "unanswered": 1}
    assert _left(app, bystander) == kept


def test_cli_forget_erases_a_session(front, tmp_path):
    app = front()
    target, bystander = _visitor(app), _visitor(app)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE", "MONGO", "REDIS", "API_"))}
    env.update(app.settings.to_env(), VOICEAPP_HOME=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "voiceapp.cli", "forget", "--session", target["session_id"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "1 recordings" in done.stdout and "1 turns" in done.stdout and "1 unanswered" in done.stdout
    gone = {"recording": False, "reply": False, "turns": 0, "session": 0, "events": 0, "unanswered": 0}
    assert _left(app, target) == gone
    assert _left(app, bystander)["recording"] and _left(app, bystander)["turns"] == 1


def test_sweep_keeps_recordings_with_their_turn_by_default(front):
    app = front()
    kept, orphaned = (
        _visitor(app, age_s=2 * retention.ORPHAN_GRACE_S),
        _visitor(app, age_s=2 * retention.ORPHAN_GRACE_S),
    )
    fresh_orphan = _visitor(app)
    # the turn of `orphaned` expired (30-day TTL) or was deleted: its recording and reply must go too
    for visitor in (orphaned, fresh_orphan):
        app.db[app.settings.interactions_collection].delete_one({"_id": visitor["turn_id"]})
    assert retention.sweep(app.db, app.settings) == {"uploads": 1, "replies": 1}
    assert _left(app, kept)["recording"] and _left(app, kept)["reply"]
    assert not _left(app, orphaned)["recording"] and not _left(app, orphaned)["reply"]
    assert _left(app, fresh_orphan)["recording"]  # younger than the grace: its turn may be being written now


def test_sweep_applies_a_retention_in_seconds(front):
    app = front(recording_retention="120")
    old, recent = _visitor(app, age_s=300), _visitor(app, age_s=10)
    assert retention.sweep(app.db, app.settings) == {"uploads": 1, "replies": 1}
    assert _left(app, old)["turns"] == 1 and not _left(app, old)["recording"] and not _left(app, old)["reply"]
    assert _left(app, recent)["recording"] and _left(app, recent)["reply"]


def test_retention_setting_is_checked():
    assert Settings.from_env({}).retention_seconds == -1
    assert Settings.from_env({"VOICE_RECORDING_RETENTION": "0"}).retention_seconds == 0
    assert Settings.from_env({"VOICE_RECORDING_RETENTION": "86400"}).retention_seconds == 86400
    for bad in ("-5", "forever", "1.5"):
        with pytest.raises(SettingsError, match="VOICE_RECORDING_RETENTION"):
            Settings.from_env({"VOICE_RECORDING_RETENTION": bad})


def test_retention_zero_deletes_the_recording_once_recognised(front, tmp_path):
    """A real recognition worker with VOICE_RECORDING_RETENTION=0: the transcript is kept, the recording is not."""
    app = front(recording_retention="0")
    worker_settings = app.settings.replace(home=str(tmp_path))
    stack.up(worker_settings, workers=("stt",), api=False)
    try:
        session = requests.post(f"{app.base_url}{API}/sessions", json={"project": "demo"}, timeout=10).json()
        auth = {"Authorization": f"Bearer {session['token']}"}
        posted = requests.post(
            f"{app.base_url}{API}/sessions/{session['session_id']}/turns",
            data=shared_file("jfk.flac").read_bytes(),
            headers=auth,
            timeout=30,
        )
        assert posted.status_code == 202, posted.text
        turn_id = posted.json()["turn_id"]
        turns = app.db[app.settings.interactions_collection]
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and "transcript" not in (turns.find_one({"_id": turn_id}) or {}):
            time.sleep(0.3)
        turn = turns.find_one({"_id": turn_id})
        assert "country" in turn["transcript"].lower()
        # Deleted right after the transcript is published (the recorded transcript comes a moment before).
        while time.monotonic() < deadline and _exists(app, UPLOADS_BUCKET, turn["upload_id"]):
            time.sleep(0.1)
        assert not _exists(app, UPLOADS_BUCKET, turn["upload_id"])
    finally:
        stack.down(worker_settings)
