"""The ops stack shared by test_flower, test_deploy and test_docs_commands: a whole stack with Flower, whose
recognition worker is started the way the container image starts it (`deploy/entrypoint.sh worker stt`) with its
own metrics endpoint (WORKER_METRICS_PORT). The fixtures `ops_stack` and `ops_turn` live in conftest.py.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class OpsStack:
    """A running stack with Flower and an entrypoint-started stt worker exposing /metrics."""

    settings: Settings
    base_url: str
    flower_url: str
    worker_metrics_url: str
    worker_log: Path
    flower_auth: tuple[str, str] | None = None  # Flower's basic-auth user and password (stack.flower_auth)

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
def start_ops_stack(tmp_path_factory: pytest.TempPathFactory) -> tuple[OpsStack, callable]:
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
            stack.flower_auth(settings),
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


def spoken_turn(ops_stack: OpsStack) -> dict:
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
