"""Per-IP and per-project request rate limits, counted in Redis so every API process shares them."""

from __future__ import annotations

from flask import Flask, current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse_many

from ..errors import LimitExceeded, VoiceError
from .auth import read_token, request_token

limiter = Limiter(key_func=get_remote_address, headers_enabled=True, strategy="moving-window")


def _settings():
    return current_app.extensions["voiceapp"].settings


def ip_limit() -> str:
    """VOICE_RATE_LIMIT_IP, e.g. '120/minute'."""
    return _settings().rate_limit_ip


def project_limit() -> str:
    """VOICE_RATE_LIMIT_PROJECT, e.g. '1200/minute'."""
    return _settings().rate_limit_project


def project_key() -> str:
    """The project of the request: from its verified session token, or the project it asks a session for."""
    try:
        project = read_token(_settings(), request_token()).get("prj") or ""
    except VoiceError:
        body = request.get_json(silent=True) if request.is_json else None
        project = body.get("project") if isinstance(body, dict) and isinstance(body.get("project"), str) else ""
    return f"project:{project[:64]}" if project else f"ip:{get_remote_address()}"


def hit_turn_limits(project: str) -> None:
    """Count a turn that arrives without an HTTP request (a WebSocket text message) against the same limits."""
    settings = _settings()
    scopes = (
        (settings.rate_limit_ip, f"ip:{get_remote_address()}"),
        (settings.rate_limit_project, f"project:{project[:64]}"),
    )
    for limit, key in scopes:
        for item in parse_many(limit):
            if not limiter.limiter.hit(item, "ws-turn", key):
                raise LimitExceeded(f"rate limit exceeded ({limit}); slow down", code="rate_limited")


def init_app(app: Flask) -> None:
    """Bind the limiter to Redis."""
    settings = app.extensions["voiceapp"].settings
    app.config.setdefault("RATELIMIT_STORAGE_URI", settings.redis_url)
    app.config.setdefault("RATELIMIT_KEY_PREFIX", "voiceapp-rl")
    limiter.init_app(app)
