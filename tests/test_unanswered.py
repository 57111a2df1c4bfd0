"""The unanswered list: refused questions recorded per project, grouped by meaning, via API, CLI and a real turn."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from devstack.turns import ask
from migrations import migrate
from tests.support import new_session, shared_file
from voiceapp.config import Settings
from voiceapp.errors import BadRequest
from voiceapp.storage import unanswered
from voiceapp.storage.mongo import get_client, get_db
from voiceapp.storage.projects import create_key

ASKED = [
    ("Do you sell pizza?", "s1"),
    ("Do you sell pizza?", "s2"),
    ("do you sell pizza", "s3"),
    ("Do you have pizza?", "s3"),
    ("Do you repair laptops?", "s4"),
    ("Can you fix my laptop?", "s5"),
    ("Do you sell cars?", "s6"),
]


@pytest.fixture
def filled(mongo_uri):
    """(db, settings) with the ASKED refusals of project 'shop', one of 'other' and one 10 days old."""
    settings = Settings.from_env({}, mongo_uri=mongo_uri, mongo_db=f"t_{uuid.uuid4().hex[:12]}")
    db = get_db(settings)
    migrate(db, settings)
    for question, session in ASKED:
        assert unanswered.record(db, settings, "shop", question, session, f"turn-{session}")
    unanswered.record(db, settings, "other", "Do you sell pizza?", "x", "t")
    old = datetime.now(timezone.utc) - timedelta(days=10)
    db[settings.unanswered_collection].insert_one({"project": "shop", "question": "Is there a sauna?", "asked_at": old})
    yield db, settings
    get_client(settings).drop_database(settings.mongo_db)


def test_near_duplicates_are_grouped_most_frequent_first(filled):
    db, settings = filled
    groups = unanswered.grouped(db, settings, "shop", timedelta(days=7))
    assert [g["count"] for g in groups] == [4, 2, 1]
    pizza, laptops, cars = groups
    assert pizza["question"] == "Do you sell pizza?" and pizza["sessions"] == 3
    assert {v["question"] for v in pizza["variants"]} == {
        "Do you sell pizza?",
        "do you sell pizza",
        "Do you have pizza?",
    }
    assert {v["question"] for v in laptops["variants"]} == {"Do you repair laptops?", "Can you fix my laptop?"}
    # Shares words with the pizza questions but not their meaning: its own group.
    assert cars["question"] == "Do you sell cars?" and cars["count"] == 1


def test_since_limits_the_window_and_projects_stay_apart(filled):
    db, settings = filled
    month = unanswered.grouped(db, settings, "shop", timedelta(days=30))
    assert "Is there a sauna?" in [g["question"] for g in month]
    assert sum(g["count"] for g in unanswered.grouped(db, settings, "other", timedelta(days=7))) == 1
    assert unanswered.grouped(db, settings, "nobody", timedelta(days=7)) == []


@pytest.mark.parametrize(
    "value, delta", [("7d", timedelta(days=7)), ("24h", timedelta(hours=24)), ("2w", timedelta(weeks=2))]
)
def test_since_values(value, delta):
    assert unanswered.parse_since(value) == delta


@pytest.mark.parametrize("value", ["", "7", "0d", "7y", "-1d", "1e9d", "7d; drop"])
def test_bad_since_is_a_clear_error(value):
    with pytest.raises(BadRequest) as err:
        unanswered.parse_since(value)
    assert err.value.code == "invalid_field"


def test_empty_questions_are_skipped_and_long_ones_capped(filled):
    db, settings = filled
    assert not unanswered.record(db, settings, "cap", "  \n ", "s", "t")
    assert unanswered.record(db, settings, "cap", "why " * 1000, "s", "t")
    stored = db[settings.unanswered_collection].find_one({"project": "cap"})
    assert len(stored["question"]) == unanswered.MAX_QUESTION_CHARS


def test_the_endpoint_needs_the_project_key_and_lists_groups(front):
    app = front()
    key = create_key(app.db, app.settings, "shop")
    for question, session in ASKED:
        unanswered.record(app.db, app.settings, "shop", question, session, None)
    url = f"{app.base_url}/api/v1/voice/projects/shop/unanswered"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer vk_nope"}, timeout=10).status_code == 403
    auth = {"Authorization": f"Bearer {key}"}
    ok = requests.get(url, headers=auth, timeout=30)
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["project"] == "shop" and body["since"] == "7d"
    assert [g["count"] for g in body["groups"]] == [4, 2, 1]
    bad = requests.get(url, params={"since": "forever"}, headers=auth, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_field"


def test_the_report_command_prints_groups(filled, tmp_path: Path):
    _, settings = filled
    env = {**os.environ, "MONGO_URI": settings.mongo_uri, "MONGO_DB": settings.mongo_db, "VOICEAPP_HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "voiceapp.cli", "report", "unanswered", "--project", "shop", "--since", "7d"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].split()[0] == "4" and "Do you sell pizza?" in lines[0] and "+2 similar wordings" in lines[0]
    assert lines[1].split()[0] == "2" and len(lines) == 3
    bad = subprocess.run([*cmd[:-1], "soon"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "24h, 7d or 2w" in bad.stderr


def test_a_refused_spoken_question_is_recorded_with_its_session(live, demo_kb):
    session = new_session(live.base_url, "demo")
    audio = shared_file("jfk.flac").read_bytes()  # "ask not what your country can do for you": not in the demo KB
    turn = ask(live.base_url, session, audio)
    assert turn["status"] == "done" and turn["intent"] == "fallback", turn
    rows = list(live.db[live.settings.unanswered_collection].find({"session_id": session["session_id"]}))
    assert len(rows) == 1
    assert rows[0]["project"] == "demo" and rows[0]["turn_id"] == turn["turn_id"]
    assert rows[0]["question"] == " ".join(turn["transcript"].split())
