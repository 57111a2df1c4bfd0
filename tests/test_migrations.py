"""Migrations against a real MongoDB wire server: seed indexes, idempotency, overrides, TTL changes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from pymongo import MongoClient

import devstack as stack
from migrations import MIGRATIONS_COLLECTION, migrate, verify
from voiceapp.config import Settings

ROOT = Path(__file__).resolve().parents[1]
THIRTY_DAYS = 30 * 24 * 3600


@pytest.fixture
def env(mongo_uri):
    """(client, db, settings) on a fresh database, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    client = MongoClient(mongo_uri, tz_aware=True, serverSelectionTimeoutMS=3000)
    settings = Settings.from_env({}, mongo_uri=mongo_uri, mongo_db=name)
    yield client, client[name], settings
    client.drop_database(name)
    client.close()


def specs(db, collection: str) -> set[tuple]:
    """Indexes other than _id as (key, unique, ttl), ignoring server-side names."""
    out = set()
    for info in db[collection].list_indexes():
        if info["name"] == "_id_":
            continue
        key = tuple((k, int(v)) for k, v in info["key"].items())
        out.add((key, bool(info.get("unique", False)), info.get("expireAfterSeconds")))
    return out


SEED = {
    "voice_sessions": {
        ((("expires_at", 1),), False, 0),
        ((("session_id", 1),), True, None),
        ((("project", 1), ("created_at", 1)), False, None),
    },
    "voice_interactions": {
        ((("session_id", 1), ("timestamp", 1)), False, None),
        ((("project", 1), ("timestamp", 1)), False, None),
        ((("timestamp", 1),), False, THIRTY_DAYS),
    },
    "voice_audio_cache": {
        ((("accessed_at", 1),), False, 604800),
        ((("text_hash", 1), ("voice", 1), ("language", 1)), False, None),
    },
    "voice_analytics": set(),
}


def test_migrate_creates_exactly_the_seed_collections_and_indexes(env):
    _, db, settings = env
    report = migrate(db, settings)
    names = set(db.list_collection_names())
    assert set(SEED) | {"voice_knowledge"} <= names
    for collection, expected in SEED.items():
        assert specs(db, collection) == expected, collection
    assert specs(db, "voice_knowledge") == {((("project", 1), ("source", 1), ("position", 1)), False, None)}
    assert specs(db, "voice_projects") == {((("project", 1),), True, None)}
    assert specs(db, "voice_unanswered") == {
        ((("project", 1), ("asked_at", -1)), False, None),
        ((("asked_at", 1),), False, 30 * 24 * 3600),
    }
    assert set(report.created_collections) >= set(SEED)
    assert report.applied_versions == [1, 2, 3, 4]
    assert verify(db, settings) == []


def test_migrate_twice_is_idempotent(env):
    _, db, settings = env
    migrate(db, settings)
    before = {name: specs(db, name) for name in SEED}
    second = migrate(db, settings)
    assert not second.changed
    assert second.created_collections == second.created_indexes == second.recreated_indexes == []
    assert second.already_applied == [1, 2, 3, 4] and second.applied_versions == []
    assert {name: specs(db, name) for name in SEED} == before
    assert sorted(doc["_id"] for doc in db[MIGRATIONS_COLLECTION].find()) == [1, 2, 3, 4]
    assert verify(db, settings) == []


def test_collection_name_overrides_are_honoured(env):
    _, db, _ = env
    settings = Settings.from_env(
        {
            "MONGO_VOICE_SESSIONS": "s_custom",
            "MONGO_VOICE_INTERACTIONS": "i_custom",
            "MONGO_VOICE_AUDIO_CACHE": "c_custom",
            "MONGO_VOICE_ANALYTICS": "a_custom",
            "MONGO_VOICE_KNOWLEDGE": "k_custom",
            "MONGO_VOICE_PROJECTS": "p_custom",
        },
        mongo_uri="unused",
        mongo_db=db.name,
    )
    migrate(db, settings)
    names = set(db.list_collection_names())
    assert {"s_custom", "i_custom", "c_custom", "a_custom", "k_custom", "p_custom"} <= names
    assert not names & set(SEED)
    assert specs(db, "s_custom") == SEED["voice_sessions"]
    assert specs(db, "c_custom") == SEED["voice_audio_cache"]
    assert verify(db, settings) == []


def test_changed_cache_ttl_drops_and_recreates_the_index(env):
    _, db, settings = env
    migrate(db, settings)
    shorter = settings.replace(cache_ttl=3600)
    assert any("accessed_at" in problem and "3600" in problem for problem in verify(db, shorter))
    report = migrate(db, shorter)
    assert [label for label in report.recreated_indexes if "accessed_at" in label]
    ttl_indexes = [i for i in db["voice_audio_cache"].list_indexes() if "accessed_at" in i["key"]]
    assert len(ttl_indexes) == 1 and ttl_indexes[0]["expireAfterSeconds"] == 3600
    assert verify(db, shorter) == []
    assert verify(db, settings) != []


def test_indexes_are_matched_by_spec_not_by_name(env):
    _, db, settings = env
    db["voice_sessions"].create_index([("session_id", 1)], unique=True, name="my_own_name")
    report = migrate(db, settings)
    assert any("session_id" in label for label in report.existing_indexes)
    names = [i["name"] for i in db["voice_sessions"].list_indexes() if "session_id" in i["key"]]
    assert names == ["my_own_name"]


def test_an_index_with_wrong_options_is_recreated(env):
    _, db, settings = env
    db["voice_sessions"].create_index([("session_id", 1)])  # not unique
    assert any("session_id" in p and "unique" in p for p in verify(db, settings))
    migrate(db, settings)
    assert specs(db, "voice_sessions") == SEED["voice_sessions"]


def test_verify_reports_a_missing_index_and_migrate_repairs_it(env):
    _, db, settings = env
    migrate(db, settings)
    db["voice_interactions"].drop_index([("project", 1), ("timestamp", 1)])
    problems = verify(db, settings)
    assert problems == ["voice_interactions: index {project: 1, timestamp: 1} is missing"]
    migrate(db, settings)
    assert verify(db, settings) == []


def test_verify_on_an_empty_database_names_everything_missing(env):
    _, db, settings = env
    problems = verify(db, settings)
    for name in [*SEED, "voice_knowledge"]:
        assert f"collection {name} is missing" in problems
    assert any("migration 001" in p for p in problems)


def _run_cli(mongo_uri: str, db_name: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGO", "VOICE"))}
    env.update({"MONGO_URI": mongo_uri, "MONGO_DB": db_name})
    return subprocess.run(
        [sys.executable, "-m", "migrations", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_cli_exits_non_zero_naming_what_is_missing_then_migrates(env, mongo_uri):
    _, db, _ = env
    checked = _run_cli(mongo_uri, db.name, "--verify-only")
    assert checked.returncode == 1
    assert "voice_sessions is missing" in checked.stderr
    migrated = _run_cli(mongo_uri, db.name)
    assert migrated.returncode == 0, migrated.stderr
    assert "verify: OK" in migrated.stdout
    assert specs(db, "voice_sessions") == SEED["voice_sessions"]


def test_cli_reports_an_unreachable_database(env):
    result = _run_cli(f"mongodb://user:hunter2@127.0.0.1:{stack.free_port()}/?directConnection=true", "x")
    assert result.returncode == 2
    assert "unavailable" in result.stderr and "hunter2" not in result.stderr
