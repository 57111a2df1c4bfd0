"""Where a stack lives: its home and run dir, the state file and its lock, generated secrets."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from voiceapp.config import Settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent


WIRE_SERVER = Path(__file__).resolve().parent / "wire_server.py"  # runs under its own Python >= 3.13


def home_dir(settings: Settings) -> Path:
    """The absolute VOICEAPP_HOME."""
    return Path(settings.home).expanduser().resolve()


def run_dir(settings: Settings) -> Path:
    """Where PIDs, logs, the state file and the generated secret live."""
    return home_dir(settings) / "run"


def state_path(settings: Settings) -> Path:
    return run_dir(settings) / "stack.json"


def load_state(settings: Settings) -> dict[str, Any]:
    """The recorded state, or an empty one."""
    try:
        return json.loads(state_path(settings).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"services": {}}


def save_state(settings: Settings, state: dict[str, Any]) -> None:
    path = state_path(settings)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    tmp.replace(path)


@contextlib.contextmanager
def locked(settings: Settings) -> Iterator[None]:
    """Serialise up/down of one home (two `make demo` at once must not start two stacks)."""
    run = run_dir(settings)
    run.mkdir(parents=True, exist_ok=True)
    with open(run / "stack.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def secret_key(settings: Settings) -> str:
    """settings.secret_key, else one generated once and kept in the run dir (0600)."""
    if settings.secret_key:
        return settings.secret_key
    path = run_dir(settings) / "secret_key"
    if path.exists():
        return path.read_text().strip()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    key = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


FLOWER_USER = "voiceapp"


def flower_auth(settings: Settings) -> tuple[str, str]:
    """(user, password) of the local Flower: FLOWER_BASIC_AUTH, else a password generated once (run dir, 0600).

    Flower runs tasks on request (POST /api/task/async-apply): it never runs without authentication here.
    """
    configured = os.environ.get("FLOWER_BASIC_AUTH", "").split(",")[0].strip()
    if ":" in configured:
        user, password = configured.split(":", 1)
        return user, password
    path = run_dir(settings) / "flower_password"
    if path.exists():
        return FLOWER_USER, path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    password = secrets.token_urlsafe(24)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    return FLOWER_USER, password
