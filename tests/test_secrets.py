"""Secrets (provider keys, the signing key, project keys, session tokens) never leave where they belong.

A stack of its own runs at debug log level with every kind of secret set, serves a keyed project
over HTTP and the WebSocket (token in the URL, as browsers send it), fails a few requests with
bad credentials, and then every log file, every event in Redis, every value in Redis (Celery
messages and results included), every task Flower shows and every stored MongoDB document is
searched for each secret.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import redis
import requests
import websocket
from bson import json_util

import devstack as stack
from devstack.turns import ask
from tests.fakes import elevenlabs as fake_elevenlabs
from tests.support import shared_file
from voiceapp.audio import decode
from voiceapp.config import Settings
from voiceapp.storage import projects

pytestmark = pytest.mark.timeout(300)

SECRETS = {
    "secret_key": "sk-sign-7c1e0f3a9b2d4e6f8a0b1c2d3e4f5a6b",
    "elevenlabs_api_key": "el-key-5a1b2c3d4e5f60718293a4b5c6d7e8f9",
    "azure_speech_key": "az-key-0f9e8d7c6b5a49382716a5b4c3d2e1f0",
    "dialog_llm_api_key": "llm-key-a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6",
}
PROJECT = "secretive"


@pytest.fixture(scope="module")
def leaks(tmp_path_factory):
    """Run the stack through a keyed session, then collect everything that could hold a secret."""
    vendor, server = fake_elevenlabs.start(SECRETS["elevenlabs_api_key"])
    home = tmp_path_factory.mktemp("secrets-home")
    requested = stack.private_settings(
        home,
        log_level="debug",
        elevenlabs_base_url=vendor.url,
        tts_default_provider="elevenlabs",
        tts_fallback_chain=("piper",),
        **SECRETS,
    )
    try:
        with stack.private_stack(requested, flower=True, mongo_engine="memory") as running:
            settings, db = running.settings, running.db
            key = projects.create_key(db, settings, PROJECT)
            found = _exercise(settings, running.base_url, key)
            found["vendor_saw_key"] = [r.headers.get("xi-api-key") for r in vendor.requests]
            found["flower"] = _flower_text(
                running.state["services"]["flower"]["url"], found["turn_ids"], stack.flower_auth(requested)
            )
            found["logs"] = {p.name: p.read_text(errors="replace") for p in (home / "run").glob("*.log")}
            found["events"] = _events_text(settings)
            found["redis"] = _redis_text(settings)
            found["mongo"] = _mongo_text(db)
            found["project_doc"] = db[settings.projects_collection].find_one({"project": PROJECT})
            found["key"] = key
            yield found
    finally:
        server.shutdown()


def _exercise(settings: Settings, base: str, key: str) -> dict:
    """A keyed session: a turn over HTTP, one over the WebSocket, a token refresh, and bad credentials."""
    created = requests.post(
        f"{base}/api/v1/voice/sessions",
        json={"project": PROJECT},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    session = created.json()
    sid, token = session["session_id"], session["token"]
    auth = {"Authorization": f"Bearer {token}"}
    result = ask(base, session, shared_file("jfk.flac").read_bytes(), timeout=90)
    assert result["status"] == "done", result
    refreshed = requests.post(f"{base}/api/v1/voice/sessions/{sid}/token", headers=auth, timeout=30)
    assert refreshed.status_code == 200
    new_token = refreshed.json()["token"]

    ws = websocket.create_connection(
        f"ws{base[4:]}/api/v1/voice/ws/{sid}?token={new_token}&mode=push_to_talk", timeout=60
    )
    try:
        samples = decode(shared_file("jfk.flac").read_bytes(), settings).samples
        pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
        for start in range(0, len(pcm), 640):
            ws.send_binary(pcm[start : start + 640])
        ws.send(json.dumps({"type": "end"}))
        while True:
            message = json.loads(ws.recv())
            if message.get("seq") is not None and message["type"] in ("done", "error"):
                break
        assert message["type"] == "done", message
        ws_turn = message["turn_id"]
    finally:
        ws.close()
    # Wrong credentials are logged as failures: their values (and the right ones) must not be.
    assert (
        requests.post(
            f"{base}/api/v1/voice/sessions",
            json={"project": PROJECT},
            headers={"Authorization": f"Bearer {key[:-4]}abcd"},
            timeout=30,
        ).status_code
        == 403
    )
    assert (
        requests.get(f"{base}/api/v1/voice/sessions/{sid}", params={"token": token + "x"}, timeout=30).status_code
        == 401
    )
    time.sleep(1.0)  # task events reach Flower a moment after the turn
    return {"session_id": sid, "tokens": [token, new_token], "turn_ids": [result["turn_id"], ws_turn]}


def _flower_text(url: str, turn_ids: list[str], auth: tuple[str, str]) -> str:
    deadline = time.monotonic() + 30
    while True:
        tasks = requests.get(f"{url}/api/tasks", params={"limit": 500}, auth=auth, timeout=10).json()
        mine = [t for t in tasks.values() if any(tid in (t.get("args") or "") for tid in turn_ids)]
        if len(mine) >= 5 or time.monotonic() > deadline:  # 3 stages + live STT + dialog + tts
            return json.dumps(tasks)
        time.sleep(0.5)


def _events_text(settings: Settings) -> str:
    client = redis.Redis.from_url(settings.redis_url)
    out = []
    for key in client.scan_iter("voiceapp:events:*:stream"):
        out += [fields[b"e"].decode() for _, fields in client.xrange(key)]
    return "\n".join(out)


def _redis_text(settings: Settings) -> str:
    """Every value in Redis: Celery messages, results, events, limits, heartbeats."""
    client = redis.Redis.from_url(settings.redis_url)
    out = []
    for key in client.scan_iter("*"):
        kind = client.type(key).decode()
        if kind == "string":
            out.append(client.get(key) or b"")
        elif kind == "list":
            out += client.lrange(key, 0, -1)
        elif kind == "hash":
            out += [k + b"=" + v for k, v in client.hgetall(key).items()]
        elif kind == "set":
            out += list(client.smembers(key))
        elif kind == "zset":
            out += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            out += [b" ".join(f + b"=" + v for f, v in fields.items()) for _, fields in client.xrange(key)]
        out.append(key)
    return b"\n".join(out).decode(errors="replace")


def _mongo_text(db) -> str:
    """Every document of every collection (GridFS file metadata included, audio chunks excluded)."""
    out = []
    for name in db.list_collection_names():
        if name.endswith(".chunks"):
            continue
        out += [json_util.dumps(doc) for doc in db[name].find()]
    return "\n".join(out)


def _all_secrets(leaks: dict) -> dict[str, str]:
    values = dict(SECRETS)
    values["project_key"] = leaks["key"]
    for i, token in enumerate(leaks["tokens"]):
        values[f"session_token_{i}"] = token
    return values


def test_the_exercise_really_used_every_secret(leaks):
    """Guards the searches below: the secrets were live (the vendor got its key, tokens opened the session)."""
    assert leaks["vendor_saw_key"] and set(leaks["vendor_saw_key"]) == {SECRETS["elevenlabs_api_key"]}
    assert "api" in " ".join(leaks["logs"]) and leaks["logs"]["api.log"]
    assert leaks["events"].count('"type": "done"') == 2
    assert len(leaks["turn_ids"]) == 2 and all(t in leaks["mongo"] for t in leaks["turn_ids"])


@pytest.mark.parametrize("where", ["logs", "events", "redis", "flower", "mongo"])
def test_no_secret_appears(leaks, where):
    text = "\n".join(leaks[where].values()) if isinstance(leaks[where], dict) else leaks[where]
    assert text, f"nothing collected from {where}"
    found = [name for name, value in _all_secrets(leaks).items() if value in text]
    assert not found, f"{', '.join(found)} found in {where}"


def test_project_keys_are_stored_only_as_hashes(leaks):
    import hashlib

    doc = leaks["project_doc"]
    assert leaks["key"] not in json_util.dumps(doc)
    assert hashlib.sha256(leaks["key"].encode()).hexdigest() in doc["key_hashes"]
