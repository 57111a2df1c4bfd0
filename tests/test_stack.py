"""The local stack manager on real processes: redis-server, the mongoeco wire server, process groups."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pymongo
import pytest

import devstack as stack
from voiceapp.config import Settings

pytestmark = pytest.mark.timeout(180)


def _settings(home: Path, **overrides) -> Settings:
    """Settings for a private stack: its own home, and a REDIS_URL where nothing listens."""
    return stack.private_settings(home, **overrides)


def _gone(pid: int, timeout: float = 10.0) -> bool:
    """True once `pid` no longer runs (zombies count as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not stack.is_alive({"pid": pid}):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def stack_settings(tmp_path):
    """Settings of a private stack in a temporary home; whatever the test started there is stopped afterwards."""
    s = _settings(tmp_path / "home")
    yield s
    stack.down(s)


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server the test starts itself, before and outside `up`."""
    with stack.private_redis() as url:
        yield url


def test_up_starts_redis_and_wire_server_when_nothing_runs(stack_settings):
    state = stack.up(stack_settings, workers=(), api=False, mongo_engine="memory")

    redis_rec, _mongo_rec = state["services"]["redis"], state["services"]["mongo"]
    assert not redis_rec.get("external") and state["redis_url"] != stack_settings.redis_url
    assert stack.redis_answers(state["redis_url"])
    with pymongo.MongoClient(state["mongo_uri"], serverSelectionTimeoutMS=5000) as client:
        client.stackcheck.docs.insert_one({"hello": "world"})
        assert client.stackcheck.docs.find_one({}, {"_id": 0}) == {"hello": "world"}

    run = Path(stack_settings.home) / "run"
    assert json.loads((run / "stack.json").read_text())["services"]["redis"]["pid"] == redis_rec["pid"]
    assert (run / "redis.pid").read_text().strip() == str(redis_rec["pid"])
    assert (run / "mongo.log").read_text().count("ready mongodb://") == 1

    info = stack.status(stack_settings)
    assert info["redis"] == {
        "pid": redis_rec["pid"],
        "alive": True,
        "url": state["redis_url"],
        "log": str(run / "redis.log"),
        "external": False,
    }
    assert info["mongo"]["alive"] and info["mongo"]["url"] == state["mongo_uri"]


def test_generated_secret_key_is_private_and_resolve_points_at_the_stack(stack_settings):
    state = stack.up(stack_settings, workers=(), api=False, mongo_engine="memory")

    key_file = Path(stack_settings.home) / "run" / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    resolved = stack.resolve(stack_settings)
    assert resolved.redis_url == state["redis_url"]
    assert resolved.mongo_uri == state["mongo_uri"]
    assert resolved.secret_key == key_file.read_text().strip() and len(resolved.secret_key) >= 32
    assert key_file.read_text() not in (Path(stack_settings.home) / "run" / "stack.json").read_text()

    explicit = stack_settings.replace(secret_key="from-the-environment", mongo_uri="mongodb://elsewhere:27017/")
    assert stack.resolve(explicit).secret_key == "from-the-environment"
    assert stack.resolve(explicit).mongo_uri == "mongodb://elsewhere:27017/"


def test_down_stops_what_up_started_and_removes_the_state(stack_settings):
    state = stack.up(stack_settings, workers=(), api=False, mongo_engine="memory")
    pids = {name: rec["pid"] for name, rec in state["services"].items()}

    stopped = stack.down(stack_settings)

    assert sorted(stopped) == ["mongo", "redis"]
    assert all(_gone(pid) for pid in pids.values())
    assert not (Path(stack_settings.home) / "run" / "stack.json").exists()
    assert stack.status(stack_settings) == {}
    assert stack.down(stack_settings) == []


def test_up_is_idempotent_and_restarts_only_what_died(stack_settings):
    first = stack.up(stack_settings, workers=(), api=False, mongo_engine="memory")
    again = stack.up(stack_settings, workers=(), api=False, mongo_engine="memory")
    assert again["services"]["redis"]["pid"] == first["services"]["redis"]["pid"]
    assert again["services"]["mongo"]["pid"] == first["services"]["mongo"]["pid"]

    os.kill(first["services"]["mongo"]["pid"], signal.SIGKILL)
    assert _gone(first["services"]["mongo"]["pid"])
    assert stack.status(stack_settings)["mongo"]["alive"] is False

    healed = stack.up(stack_settings, workers=(), api=False, mongo_engine="memory")
    assert healed["services"]["redis"]["pid"] == first["services"]["redis"]["pid"]
    assert healed["services"]["mongo"]["pid"] != first["services"]["mongo"]["pid"]
    assert healed["mongo_uri"] == first["mongo_uri"], "a restarted server keeps its port, so clients keep their URI"
    with pymongo.MongoClient(healed["mongo_uri"], serverSelectionTimeoutMS=5000) as client:
        assert client.admin.command("ping")["ok"] == 1.0


def test_reachable_redis_is_used_and_survives_down(tmp_path, own_redis):
    settings = _settings(tmp_path / "home", redis_url=own_redis)
    try:
        state = stack.up(settings, workers=(), api=False, mongo_engine="memory")
        assert state["redis_url"] == own_redis
        assert state["services"]["redis"] == {"external": True, "url": own_redis}
        assert stack.status(settings)["redis"]["alive"] is True
    finally:
        stopped = stack.down(settings)
    assert stopped == ["mongo"]
    assert stack.redis_answers(own_redis), "down must not stop a Redis it did not start"


def test_configured_mongo_uri_is_used_and_survives_down(tmp_path):
    with stack.private_mongo() as uri:
        settings = _settings(tmp_path / "home", mongo_uri=uri)
        try:
            state = stack.up(settings, workers=(), api=False)
            assert state["mongo_uri"] == uri
            assert state["services"]["mongo"] == {"external": True, "url": uri}
            assert stack.status(settings)["mongo"]["alive"] is True
        finally:
            stopped = stack.down(settings)
        assert stopped == ["redis"]
        assert stack.mongo_answers(uri), "down must not stop a MongoDB it did not start"
        assert not (tmp_path / "home" / "data" / "mongo.sqlite").exists()


def test_down_leaves_unrelated_processes_alone(stack_settings):
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        stack.up(stack_settings, workers=(), api=False, mongo_engine="memory")
        stack.down(stack_settings)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_sqlite_engine_keeps_data_across_down_and_up(stack_settings):
    state = stack.up(stack_settings, workers=(), api=False)
    assert state["services"]["mongo"]["engine"] == "sqlite"
    with pymongo.MongoClient(state["mongo_uri"], serverSelectionTimeoutMS=5000) as client:
        client.stackcheck.docs.insert_one({"kept": True})
    stack.down(stack_settings)

    state = stack.up(stack_settings, workers=(), api=False)
    with pymongo.MongoClient(state["mongo_uri"], serverSelectionTimeoutMS=5000) as client:
        assert client.stackcheck.docs.count_documents({"kept": True}) == 1
    assert (Path(stack_settings.home) / "data" / "mongo.sqlite").exists()


def test_a_service_that_cannot_start_fails_with_its_log_tail(stack_settings):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(stack.StackError) as caught:
            stack.up(stack_settings, workers=(), api=False, mongo_engine="memory", ports={"redis": port})
    message = str(caught.value)
    assert message.startswith("redis exited before it was ready")
    assert "Address already in use" in message
    assert str(Path(stack_settings.home) / "run" / "redis.log") in message


def test_find_mongo_python_prefers_env_and_explains_what_is_missing(tmp_path):
    with_mongoeco = stack.find_mongo_python()
    assert stack.find_mongo_python({"VOICEAPP_MONGO_PYTHON": with_mongoeco, "PATH": ""}) == with_mongoeco

    bare = tmp_path / "bare"
    subprocess.run([with_mongoeco, "-m", "venv", "--without-pip", str(bare)], check=True)
    bare_python = str(bare / "bin" / "python")
    assert stack.find_mongo_python({"VOICEAPP_MONGO_PYTHON": bare_python}) != bare_python

    with pytest.raises(stack.StackError, match="mongoeco is not installed") as caught:
        stack.find_mongo_python(candidates=[bare_python, sys.executable])
    assert bare_python in str(caught.value) and "mongoeco[wire]==4.11.0" in str(caught.value)

    with pytest.raises(stack.StackError, match=r"no Python >= 3\.13 found") as caught:
        stack.find_mongo_python(candidates=[sys.executable])
    assert "MONGO_URI" in str(caught.value)


def test_flower_starts_on_request_with_its_api_behind_basic_auth(stack_settings):
    state = stack.up(stack_settings, workers=(), api=False, flower=True, mongo_engine="memory")

    flower = state["services"]["flower"]
    assert flower["url"].startswith("http://127.0.0.1:")
    with pytest.raises(urllib.error.HTTPError) as refused:  # issue 16: it used to run tasks for anyone
        urllib.request.urlopen(flower["url"] + "/api/workers", timeout=10)
    assert refused.value.code == 401
    user, password = stack.flower_auth(stack_settings)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(flower["url"] + "/api/workers", headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        assert json.loads(response.read()) == {}
    assert "flower" in stack.down(stack_settings)
    assert _gone(flower["pid"])


def test_busy_api_port_is_refused_before_starting_the_api(stack_settings):
    with socket.socket() as busy:
        busy.bind((stack_settings.api_host, stack_settings.api_port))
        busy.listen()
        with pytest.raises(
            stack.StackError, match=f"api cannot listen on 127.0.0.1:{stack_settings.api_port}.*API_PORT"
        ):
            stack.up(stack_settings, workers=(), mongo_engine="memory")
    assert "api" not in stack.status(stack_settings)
    assert stack.status(stack_settings)["redis"]["alive"] is True
