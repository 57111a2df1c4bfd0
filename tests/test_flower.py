"""Flower against a real stack: after a turn, its HTTP API shows the three stage tasks by name, with ids only.

The `ops_stack` fixture (also used by test_deploy.py and test_docs_commands.py) is a whole stack with
Flower, whose recognition worker is started the way the container image starts it
(`deploy/entrypoint.sh worker stt`) with its own metrics endpoint (WORKER_METRICS_PORT).
"""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.support import REPO, new_session, shared_file
from voiceapp import stack
from voiceapp.config import Settings

ENTRYPOINT = REPO / "deploy" / "entrypoint.sh"
FLOWER_AUTH: tuple[str, str] | None = None  # set when the ops stack starts (stack.flower_auth)
STAGE_TASKS = {"voice.stt.transcribe": "stt", "voice.dialog.respond": "dialog", "voice.tts.synthesize": "tts"}


@dataclass(frozen=True)
class OpsStack:
    """A running stack with Flower and an entrypoint-started stt worker exposing /metrics."""

    settings: Settings
    base_url: str
    flower_url: str
    worker_metrics_url: str
    worker_log: Path

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for commands talking to this stack (the venv first on PATH)."""
        venv_bin = str(Path(sys.executable).parent)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VOICE", "MONGO", "REDIS"))}
        env.update(self.settings.to_env())
        env.update(PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1", **extra)
        return env


def _wait_for(what: str, ready, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise AssertionError(f"{what} not ready after {timeout:.0f} s\n{tail}")
        time.sleep(0.3)


def _http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _start_entrypoint_worker(ops_env: dict[str, str], queue: str, log: Path) -> subprocess.Popen:
    """`deploy/entrypoint.sh worker QUEUE`, as the image runs it, in its own process group."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [str(ENTRYPOINT), "worker", queue],
            cwd=REPO,
            env=ops_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


# test_deploy.py and test_docs_commands.py import these fixtures; pytest then holds one definition per
# module, so the stack and the turn are shared here and the stack stops when its last user is done.
_shared: dict = {}


def _start_ops_stack(tmp_path_factory: pytest.TempPathFactory) -> tuple[OpsStack, callable]:
    """Stack with Flower (dialog and tts workers from voiceapp.stack, stt from the image entry point)."""
    home = tmp_path_factory.mktemp("voiceapp-ops-home")
    settings = Settings.from_env(
        {},
        home=str(home),
        api_port=stack.free_port(),
        redis_url=f"redis://127.0.0.1:{stack.free_port()}/0",
        open_projects=("demo",),
        session_timeout=600,
    )
    proc = None

    def stop() -> None:
        if proc is not None:
            _stop(proc)
        stack.down(settings)

    try:
        state = stack.up(settings, flower=True, mongo_engine="memory", workers=("dialog", "tts"))
        global FLOWER_AUTH
        FLOWER_AUTH = stack.flower_auth(settings)
        resolved = stack.resolve(settings)
        import migrations
        from voiceapp.storage.mongo import get_db

        migrations.migrate(get_db(resolved), resolved)
        metrics_port = stack.free_port()
        ops = OpsStack(
            resolved,
            stack.api_url(resolved),
            state["services"]["flower"]["url"],
            f"http://127.0.0.1:{metrics_port}/metrics",
            home / "entrypoint-worker-stt.log",
        )
        proc = _start_entrypoint_worker(
            ops.env(WORKER_METRICS_PORT=str(metrics_port), WORKER_METRICS_HOST="127.0.0.1"), "stt", ops.worker_log
        )
        _wait_for(
            "entrypoint stt worker",
            lambda: (
                proc.poll() is None and re.search(r"\bready\.", ops.worker_log.read_text(errors="replace")) is not None
            ),
            240,
            ops.worker_log,
        )
        _wait_for("worker metrics endpoint", lambda: _http_ok(ops.worker_metrics_url), 30, ops.worker_log)
    except BaseException:
        stop()
        raise
    return ops, stop


@pytest.fixture(scope="session")
def ops_stack(tmp_path_factory: pytest.TempPathFactory):
    """The shared ops stack (started on first use)."""
    if "stack" not in _shared:
        _shared["stack"], _shared["stop"] = _start_ops_stack(tmp_path_factory)
        _shared["users"] = 0
    _shared["users"] += 1
    try:
        yield _shared["stack"]
    finally:
        _shared["users"] -= 1
        if _shared["users"] == 0:
            _shared.pop("stop")()
            _shared.clear()


@pytest.fixture(scope="session")
def ops_turn(ops_stack: OpsStack) -> dict:
    """One finished spoken turn through the ops stack: its session and result."""
    if "turn" not in _shared:
        _shared["turn"] = _spoken_turn(ops_stack)
    return _shared["turn"]


def _spoken_turn(ops_stack: OpsStack) -> dict:
    """Ask jfk.flac through the HTTP API and wait for the finished turn."""
    session = new_session(ops_stack.base_url, "demo")
    auth = {"Authorization": f"Bearer {session['token']}"}
    sid = session["session_id"]
    turn = requests.post(
        f"{ops_stack.base_url}/api/v1/voice/sessions/{sid}/turns",
        data=shared_file("jfk.flac").read_bytes(),
        headers=auth,
        timeout=30,
    )
    assert turn.status_code == 202, turn.text
    deadline = time.monotonic() + 120
    while True:
        result = requests.get(
            f"{ops_stack.base_url}/api/v1/voice/sessions/{sid}/turns/{turn.json()['turn_id']}",
            params={"wait": 20},
            headers=auth,
            timeout=40,
        ).json()
        if result["status"] in ("done", "error", "no_speech") or time.monotonic() > deadline:
            break
    assert result["status"] == "done", result
    return {"session": session, "result": result, "turn_id": turn.json()["turn_id"]}


def _flower_tasks(flower_url: str, turn_id: str, timeout: float = 30) -> list[dict]:
    """Flower's tasks of one turn (its events arrive a moment after the turn ends)."""
    deadline = time.monotonic() + timeout
    while True:
        tasks = requests.get(f"{flower_url}/api/tasks", params={"limit": 200}, auth=FLOWER_AUTH, timeout=10).json()
        mine = [t for t in tasks.values() if turn_id in (t.get("args") or "")]
        if (len(mine) >= 3 and all(t.get("state") == "SUCCESS" for t in mine)) or time.monotonic() > deadline:
            return mine
        time.sleep(0.5)


def test_flower_lists_the_three_stage_tasks_of_a_turn_by_name_and_queue(ops_stack, ops_turn):
    tasks = _flower_tasks(ops_stack.flower_url, ops_turn["turn_id"])

    assert sorted(t["name"] for t in tasks) == sorted(STAGE_TASKS)
    for task in tasks:
        assert task["state"] == "SUCCESS", task
        assert task["routing_key"] == STAGE_TASKS[task["name"]]
        assert task["worker"].startswith(STAGE_TASKS[task["name"]] + "@")
    by_name = {t["name"]: t for t in tasks}
    # One chain: dialog's parent is recognition, synthesis's parent is dialog.
    assert by_name["voice.dialog.respond"]["parent"] == by_name["voice.stt.transcribe"]["uuid"]
    assert by_name["voice.tts.synthesize"]["parent"] == by_name["voice.dialog.respond"]["uuid"]


def test_flower_task_arguments_are_ids_never_audio_or_secrets(ops_stack, ops_turn):
    tasks = _flower_tasks(ops_stack.flower_url, ops_turn["turn_id"])
    assert len(tasks) == 3
    sid, tid = ops_turn["session"]["session_id"], ops_turn["turn_id"]

    for task in tasks:
        (ref,) = ast.literal_eval(task["args"])
        assert ref["session_id"] == sid and ref["turn_id"] == tid
        assert set(ref) <= {"session_id", "turn_id", "skip"}, ref
        assert ast.literal_eval(task["kwargs"]) == {}
        shown = f"{task['args']} {task['kwargs']} {task['result']}"
        assert len(shown) < 1000
        assert "RIFF" not in shown and "fLaC" not in shown
        assert not re.search(r"(?<!\w)b['\"]", shown), "bytes in task arguments or result"
        assert ops_stack.settings.secret_key not in shown
        assert ops_turn["session"]["token"] not in shown


def test_flower_reports_every_queue_has_a_live_worker(ops_stack, ops_turn):
    workers = requests.get(
        f"{ops_stack.flower_url}/api/workers", params={"refresh": "true"}, auth=FLOWER_AUTH, timeout=30
    ).json()

    consumed = {q["name"] for info in workers.values() for q in info.get("active_queues", [])}
    assert {"stt", "dialog", "tts"} <= consumed, workers.keys()


def test_flower_api_needs_its_password_and_metrics_do_not(ops_stack):
    """Issue 16: Flower from `voiceapp up --flower` accepted POST /api/task/async-apply without auth."""
    url = f"{ops_stack.flower_url}/api/task/async-apply/voice.dialog.respond"
    assert requests.post(url, json={"args": []}, timeout=10).status_code == 401
    assert requests.get(f"{ops_stack.flower_url}/api/workers", timeout=10).status_code == 401
    assert (
        requests.get(f"{ops_stack.flower_url}/api/workers", auth=("voiceapp", "wrong"), timeout=10).status_code == 401
    )
    assert requests.get(f"{ops_stack.flower_url}/api/workers", auth=FLOWER_AUTH, timeout=30).status_code == 200
    assert requests.get(f"{ops_stack.flower_url}/metrics", timeout=10).status_code == 200
    password = stack.run_dir(ops_stack.settings) / "flower_password"
    assert password.stat().st_mode & 0o077 == 0
