"""Start the real MongoDB wire server (voiceapp/storage/wire_server.py) on a free port for a test module."""
from __future__ import annotations

import socket
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def wire_server() -> Iterator[str]:
    """A memory-engine mongoeco server; yields its URI and stops it afterwards."""
    python = ROOT / ".venv-mongo" / "bin" / "python"
    proc = subprocess.Popen([str(python if python.exists() else "python3.13"),
                             str(ROOT / "voiceapp" / "storage" / "wire_server.py"), "--port", str(free_port())],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("ready "), f"wire server did not start: {line!r}"
        yield line.split()[1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
