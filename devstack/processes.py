"""Processes of the local stack: spawn one in its own process group, tell whether it still runs, stop it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from voiceapp.errors import VoiceError

STOP_GRACE = 10.0
READY_TIMEOUT = {"redis": 15.0, "mongo": 60.0, "api": 90.0, "worker": 240.0, "flower": 60.0}


# Popen objects of children started by this process: kept so they can be reaped (no zombies, no warnings).
_CHILDREN: dict[int, subprocess.Popen] = {}


class StackError(VoiceError):
    """A local service could not be found, started or stopped; the message says what to do."""

    code, status = "stack_error", 500


def start_time(pid: int) -> str | None:
    """The kernel start time of `pid` (guards against PID reuse); None when it is gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return _start_time_fallback(pid)
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def _start_time_fallback(pid: int) -> str | None:
    # No /proc (macOS): only liveness can be checked.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return "?"
    return "?"


def _reap(pid: int) -> None:
    proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        _CHILDREN.pop(pid, None)


def is_alive(record: Mapping[str, Any]) -> bool:
    """True when the recorded process still runs (same pid, same start time)."""
    pid = record.get("pid")
    if not pid:
        return False
    _reap(pid)
    started = start_time(pid)
    return started is not None and started == record.get("start_time", started)


def spawn(name: str, cmd: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path) -> dict[str, Any]:
    """Start `cmd` in its own process group with output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {name}: {' '.join(cmd)}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=str(cwd),
                start_new_session=True,
            )
        except OSError as err:
            raise StackError(f"cannot start {name} ({cmd[0]}): {err}") from err
    _CHILDREN[proc.pid] = proc
    (log.parent / f"{name}.pid").write_text(f"{proc.pid}\n")
    return {
        "pid": proc.pid,
        "start_time": start_time(proc.pid),
        "cmd": list(cmd),
        "log": str(log),
        "log_offset": log.stat().st_size,
    }


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def stop_all(records: Sequence[Mapping[str, Any]], grace: float = STOP_GRACE) -> list[Mapping[str, Any]]:
    """SIGTERM the process groups together, SIGKILL what remains after `grace`; return those that ran."""
    running = [r for r in records if is_alive(r)]
    for record in running:
        _signal_group(record["pid"], signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(is_alive(r) for r in running) and time.monotonic() < deadline:
        time.sleep(0.05)
    for record in running:
        if is_alive(record):
            _signal_group(record["pid"], signal.SIGKILL)
    while any(is_alive(r) for r in running) and time.monotonic() < deadline + 5:
        time.sleep(0.05)
    for record in running:
        proc = _CHILDREN.pop(record["pid"], None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
    return running


def stop(record: Mapping[str, Any], grace: float = STOP_GRACE) -> bool:
    """Stop one recorded process group; True when it was running."""
    return bool(stop_all([record], grace))


def _log_tail(path: str | Path, lines: int = 30) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _fail(name: str, record: Mapping[str, Any], why: str) -> StackError:
    return StackError(f"{name} {why}; log {record['log']} ends with:\n{_log_tail(record['log'])}")


def new_log_text(record: Mapping[str, Any]) -> str:
    """What the process wrote since this start (logs are appended across restarts)."""
    try:
        with open(record["log"], "rb") as handle:
            handle.seek(record.get("log_offset", 0))
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def wait_ready(name: str, record: dict[str, Any], ready, timeout: float) -> None:
    """Poll `ready()` until true; fail early with the log tail if the process exits."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        if not is_alive(record):
            raise _fail(name, record, "exited before it was ready")
        if time.monotonic() > deadline:
            raise _fail(name, record, f"was not ready after {timeout:.0f} s")
        time.sleep(0.2)
