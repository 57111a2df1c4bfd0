"""The application processes of a stack: the API (gunicorn), one Celery worker per queue, Flower."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from voiceapp.config import Settings

from .paths import PROJECT_ROOT, flower_auth, run_dir, save_state
from .probes import free_port, http_ok, port_open
from .processes import READY_TIMEOUT, StackError, is_alive, new_log_text, spawn, stop, wait_ready

PORT_SETTING = {"api": "API_PORT", "ws": "WS_PORT"}


def child_env(settings: Settings, resolved: Mapping[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(settings.to_env())
    env.update(resolved)
    env["PYTHONUNBUFFERED"] = "1"
    # API and workers write metric samples here; the API's /metrics aggregates them all.
    env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(run_dir(settings) / "prometheus"))
    Path(env["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
    return env


def _fingerprint(cmd: Sequence[str], env: Mapping[str, str]) -> str:
    """Changes when the command or the voiceapp settings a service runs with change."""
    names = set(Settings.env_names().values()) | {"VOICEAPP_HOME", "FLOWER_UNAUTHENTICATED_API", "FLOWER_BASIC_AUTH"}
    relevant = sorted((k, v) for k, v in env.items() if k in names)
    return hashlib.sha256(json.dumps([list(cmd), relevant]).encode()).hexdigest()[:16]


def _control_socket(settings: Settings) -> list[str]:
    """Gunicorn >= 24 opens ~/.gunicorn/gunicorn.ctl by default: one per stack, or none, so stacks never share it."""
    try:
        from gunicorn.config import KNOWN_SETTINGS
    except ImportError:
        return []
    if not any(s.name == "control_socket" for s in KNOWN_SETTINGS):
        return []
    path = run_dir(settings) / "gunicorn.ctl"
    # AF_UNIX paths are limited to ~107 bytes.
    return ["--control-socket", str(path)] if len(str(path)) < 100 else ["--no-control-socket"]


def _gunicorn(settings: Settings, host: str, port: int, name: str) -> list[str]:
    """One gevent worker process: each idle WebSocket costs a few greenlets, not OS threads."""
    control = _control_socket(settings)
    if name != "api" and control and control[0] == "--control-socket":
        control = [control[0], control[1].replace("gunicorn.ctl", f"gunicorn-{name}.ctl")]
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--worker-class",
        "gevent",
        "--worker-connections",
        str(settings.ws_max_connections + 100),
        "--workers",
        "1",
        "--bind",
        f"{host}:{port}",
        "--timeout",
        "120",
        *control,
        "voiceapp.wsgi:app",
    ]


def app_specs(
    settings: Settings, workers: Sequence[str], flower: bool, api: bool, ports: Mapping[str, int], state: dict
) -> list[tuple[str, list[str], str, Any]]:
    """(name, command, url, readiness kind) of the API, workers and Flower."""
    py = sys.executable
    specs: list[tuple[str, list[str], str, Any]] = []
    if api:
        host, port = settings.api_host, ports.get("api") or settings.api_port
        specs.append(("api", _gunicorn(settings, host, port, "api"), f"http://{host}:{port}", "http"))
        if settings.ws_port:
            # WS_PORT: WebSockets served by a process of their own (same app, same settings).
            specs.append(
                ("ws", _gunicorn(settings, host, settings.ws_port, "ws"), f"http://{host}:{settings.ws_port}", "http")
            )
    for queue in workers:
        cmd = [
            py,
            "-m",
            "celery",
            "-A",
            "tasks.worker",
            "worker",
            "-Q",
            queue,
            "-n",
            f"{queue}@%h",
            "--loglevel",
            "INFO",
        ]
        specs.append((f"worker-{queue}", cmd, "", "log"))
    if flower:
        port = ports.get("flower") or state["services"].get("flower", {}).get("port") or free_port()
        cmd = [py, "-m", "celery", "-A", "tasks.worker", "flower", f"--port={port}", "--address=127.0.0.1"]
        specs.append(("flower", cmd, f"http://127.0.0.1:{port}", "flower"))
    return specs


def _readiness(kind: str, record: dict[str, Any]):
    if kind == "http":
        return lambda: http_ok(record["url"] + "/healthz")
    if kind == "flower":
        return lambda: http_ok(record["url"] + "/healthcheck")
    return lambda: re.search(r"\bready\.", new_log_text(record)) is not None


def start_apps(settings: Settings, state: dict, specs, env: Mapping[str, str]) -> None:
    """Start what is not running (or runs with other settings), then wait for all of them together."""
    services, run = state["services"], run_dir(settings)
    pending: list[tuple[str, dict, str]] = []
    for name, cmd, url, kind in specs:
        child_env = dict(env)
        if name == "flower":
            child_env.pop("FLOWER_UNAUTHENTICATED_API", None)
            child_env["FLOWER_BASIC_AUTH"] = ":".join(flower_auth(settings))
        fingerprint = _fingerprint(cmd, child_env)
        record = services.get(name)
        if record and is_alive(record) and record.get("fingerprint") == fingerprint:
            continue
        if record:
            stop(record)
        if kind in ("http", "flower"):
            parts = urlsplit(url)
            if port_open(parts.hostname, parts.port):
                raise StackError(
                    f"{name} cannot listen on {parts.hostname}:{parts.port}: the port is busy "
                    f"(set {PORT_SETTING.get(name, 'another port')})"
                )
        new = spawn(name, cmd, child_env, run / f"{name}.log", PROJECT_ROOT)
        new.update(url=url, fingerprint=fingerprint)
        if name == "flower":
            new["port"] = urlsplit(url).port
        services[name] = new
        pending.append((name, new, kind))
    save_state(settings, state)
    for name, record, kind in pending:
        key = "worker" if name.startswith("worker-") else name
        timeout = READY_TIMEOUT.get(key, READY_TIMEOUT["api"])
        wait_ready(name, record, _readiness(kind, record), timeout)
