"""A private local stack for the benchmarks (temp home, free ports, memory MongoDB) and process probes."""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import requests

import devstack as stack
from voiceapp.config import Settings

PROJECT = "demo"
WORKERS = ("stt", "dialog", "tts")


def raise_fd_limit(wanted: int = 8192) -> int:
    """Raise this process's open-file limit (children started afterwards inherit it); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def bench_settings(home: str, ws_max_connections: int) -> Settings:
    """Settings of the bench stack: limits lifted so the bench measures speed, not admission control."""
    return stack.private_settings(
        home,
        session_timeout=3600,
        open_projects=(PROJECT,),
        ws_max_connections=ws_max_connections,
        max_concurrent_sessions=5000,
        queue_max_depth=5000,
        rate_limit_ip="1000000/minute",
        rate_limit_project="1000000/minute",
        open_project_max_sessions=5000,
        open_project_max_websockets=5000,
        session_max_websockets=100,
        rate_limit_open_project="1000000/minute",
        rate_limit_session="1000000/minute",
        rate_limit_utterances="1000000/minute",
        log_level="warning",
    )


@dataclass(frozen=True)
class BenchStack(stack.PrivateStack):
    """A private stack (resolved settings, API base URL, ws_url, db, its processes) and the pids worth sampling."""

    home: Path | None = None
    startup_s: float = 0.0

    def pids(self) -> dict[str, int]:
        """name -> pid of the API's gunicorn worker and of each Celery worker."""
        services = stack.load_state(self.requested or self.settings).get("services", {})
        out: dict[str, int] = {}
        api = services.get("api", {}).get("pid")
        if api:
            out["api"] = gunicorn_worker(api) or api
        for name in WORKERS:
            pid = services.get(f"worker-{name}", {}).get("pid")
            if pid:
                out[f"worker-{name}"] = pid
        return out


def start(ws_max_connections: int = 1100) -> BenchStack:
    """Start a whole stack in a temp home (devstack's private stack), migrate it and load the demo knowledge base."""
    raise_fd_limit(max(8192, ws_max_connections * 4))
    home = Path(tempfile.mkdtemp(prefix="voiceapp-bench-"))
    began = time.monotonic()
    running = stack.start_private(bench_settings(str(home), ws_max_connections), workers=WORKERS, mongo_engine="memory")
    from voiceapp.dialog.knowledge import load_demo

    load_demo(running.db, running.settings, PROJECT)
    return BenchStack(
        **{f.name: getattr(running, f.name) for f in fields(running)},
        home=home,
        startup_s=round(time.monotonic() - began, 2),
    )


def stop(bench: BenchStack, keep_home: bool = False) -> None:
    """Stop every process of the bench stack; its temp home (logs) goes too unless `keep_home`."""
    bench.stop()
    if not keep_home:
        shutil.rmtree(bench.home, ignore_errors=True)


def new_session(base_url: str, project: str = PROJECT) -> dict:
    """Create a voice session over HTTP."""
    response = requests.post(f"{base_url}/api/v1/voice/sessions", json={"project": project}, timeout=30)
    response.raise_for_status()
    return response.json()


# ---------------------------------------------------------------- processes


def gunicorn_worker(master: int) -> int | None:
    """The (single) worker child of a gunicorn master."""
    children = Path(f"/proc/{master}/task/{master}/children")
    try:
        pids = [int(p) for p in children.read_text().split()]
    except OSError:
        pids = []
    return pids[0] if pids else None


def rss_kib(pid: int) -> int | None:
    """Resident set size of `pid` in KiB (VmRSS), None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds `pid` has used."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------- statistics


def pct(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation), rounded to ms; None for no values."""
    data = sorted(v for v in values if v is not None)
    if not data:
        return None
    if len(data) == 1:
        return round(data[0], 4)
    pos = (len(data) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(data) - 1)
    return round(data[low] + (data[high] - data[low]) * (pos - low), 4)


def summary(values: Sequence[float]) -> dict:
    """n, p50, p95, min, max of a sample."""
    data = [v for v in values if v is not None]
    return {
        "n": len(data),
        "p50": pct(data, 50),
        "p95": pct(data, 95),
        "min": round(min(data), 4) if data else None,
        "max": round(max(data), 4) if data else None,
    }


def median(values: Sequence[float]) -> float | None:
    """The median, or None for no values."""
    data = [v for v in values if v is not None]
    return round(statistics.median(data), 4) if data else None


def slope_per_minute(samples: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) samples, in value units per minute."""
    if len(samples) < 3:
        return None
    xs = [s[0] for s in samples]
    ys = [s[1] for s in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    if den == 0:
        return None
    return round(60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den, 4)
