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

import devstack as stack
from devstack.turns import post_turn, wait_turn
from tests.support import REPO, new_session, shared_file
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


# The session fixtures ops_stack and ops_turn (conftest.py) call these once per test run.
def start_ops_stack(tmp_path_factory: pytest.TempPathFactory) -> tuple[OpsStack, callable]:
    """Stack with Flower (dialog and tts workers from devstack, stt from the image entry point)."""
    home = tmp_path_factory.mktemp("voiceapp-ops-home")
    requested = stack.private_settings(home, open_projects=("demo",), session_timeout=600)
    running = stack.start_private(requested, flower=True, mongo_engine="memory", workers=("dialog", "tts"))
    proc = None

    def stop() -> None:
        if proc is not None:
            _stop(proc)
        running.stop()

    try:
        metrics_port = stack.free_port()
        ops = OpsStack(
            running.settings,
            running.base_url,
            running.state["services"]["flower"]["url"],
            f"http://127.0.0.1:{metrics_port}/metrics",
            home / "entrypoint-worker-stt.log",
            stack.flower_auth(requested),
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
    turn_id = post_turn(ops_stack.base_url, session, shared_file("jfk.flac").read_bytes())
    result = wait_turn(ops_stack.base_url, session, turn_id, timeout=120)
    assert result["status"] == "done", result
    return {"session": session, "result": result, "turn_id": turn_id}
