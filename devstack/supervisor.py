"""up, down, status: start what is missing, stop only what was started, and resolve settings to the stack."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from voiceapp.config import Settings

from .apps import app_specs, child_env, start_apps
from .paths import home_dir, load_state, locked, run_dir, save_state, secret_key, state_path
from .probes import mongo_answers, redis_answers
from .processes import is_alive, stop_all
from .storage import ensure_mongo, ensure_redis

STORAGE = ("redis", "mongo")


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
        from voiceapp.storage.mongo import get_db

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
    with locked(settings):
        state = load_state(settings)
        state.setdefault("services", {})
        try:
            redis_url = ensure_redis(settings, state, ports)
            mongo_uri = ensure_mongo(settings, state, ports, mongo_engine)
            resolved = {
                "REDIS_URL": redis_url,
                "MONGO_URI": mongo_uri,
                "VOICE_SECRET_KEY": secret_key(settings),
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
            specs = app_specs(settings, workers, flower, api, ports, state)
            start_apps(settings, state, specs, child_env(settings, resolved))
            if api:
                state["api_url"] = state["services"]["api"]["url"]
        finally:
            save_state(settings, state)
        return state


def down(settings: Settings) -> list[str]:
    """Stop every process `up` recorded (apps first, storage last); return their names."""
    stopped: list[str] = []
    with locked(settings):
        services = load_state(settings).get("services", {})
        ours = {name: rec for name, rec in services.items() if not rec.get("external")}
        # Apps first (together, so the slowest sets the pace), storage once nothing uses it.
        for group in ([n for n in ours if n not in STORAGE], [n for n in ours if n in STORAGE]):
            running = stop_all([ours[n] for n in group])
            stopped += [n for n in group if ours[n] in running]
        for name in ours:
            with contextlib.suppress(FileNotFoundError):
                (run_dir(settings) / f"{name}.pid").unlink()
        with contextlib.suppress(FileNotFoundError):
            state_path(settings).unlink()
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
