"""Per-IP, per-project and per-session request rate limits, counted in Redis so every API process shares them."""

from __future__ import annotations

from flask import Flask, current_app, g, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse_many

from ..errors import LimitExceeded, VoiceError
from ..storage import projects
from .admission import is_open
from .auth import bearer, read_token, request_token
from .safejson import request_json

limiter = Limiter(key_func=get_remote_address, headers_enabled=True, strategy="moving-window")


def _settings():
    return current_app.extensions["voiceapp"].settings


def ip_limit() -> str:
    """VOICE_RATE_LIMIT_IP, e.g. '120/minute'."""
    return _settings().rate_limit_ip


def _verified_project() -> str | None:
    """The project this request has proven it acts for: a valid session token, or a body project with its key.

    Never the bare project name of an unauthenticated body (anyone could exhaust another project's bucket);
    an open project counts as proven, since anyone may use it anyway.
    """
    settings = _settings()
    try:
        return read_token(settings, request_token()).get("prj") or None
    except VoiceError:
        pass
    body = request_json(silent=True)
    project = body.get("project") if isinstance(body, dict) else None
    if not isinstance(project, str) or not projects.PROJECT_RE.match(project):
        return None
    if is_open(settings, project):
        return project
    try:
        rt = current_app.extensions["voiceapp"]
        projects.authorize(rt.db, settings, project, bearer())
    except VoiceError:
        return None
    return project


def _project_bucket() -> tuple[str, str]:
    """(limit key, limit) of this request's project, computed once per request."""
    if "rl_project" not in g:
        settings = _settings()
        project = _verified_project()
        if project is None:  # unproven: only the client's own address pays (the IP limit applies anyway)
            g.rl_project = (f"ip:{get_remote_address()}", settings.rate_limit_ip)
        else:
            limit = settings.rate_limit_open_project if is_open(settings, project) else settings.rate_limit_project
            g.rl_project = (f"project:{project}", limit)
    return g.rl_project


def project_key() -> str:
    """The verified project of the request (see _verified_project), else the client address."""
    return _project_bucket()[0]


def project_limit() -> str:
    """VOICE_RATE_LIMIT_PROJECT, or VOICE_RATE_LIMIT_OPEN_PROJECT for an open project."""
    return _project_bucket()[1]


def session_key() -> str:
    """The session whose valid token the request carries (the URL's session), else the client address."""
    session_id = (request.view_args or {}).get("session_id")
    try:
        if session_id and read_token(_settings(), request_token()).get("sid") == session_id:
            return f"session:{session_id}"
    except VoiceError:
        pass
    return f"ip:{get_remote_address()}"


def session_limit() -> str:
    """VOICE_RATE_LIMIT_SESSION: reads and refreshes of one session."""
    return _settings().rate_limit_session


def hit_turn_limits(project: str) -> None:
    """Count a turn that arrives without an HTTP request (a WebSocket text message) against the same limits."""
    settings = _settings()
    per_project = settings.rate_limit_open_project if is_open(settings, project) else settings.rate_limit_project
    scopes = ((settings.rate_limit_ip, f"ip:{get_remote_address()}"), (per_project, f"project:{project[:64]}"))
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


# One budget per session (and per project) across every endpoint it covers, not one per endpoint.
session_limited = limiter.shared_limit(session_limit, scope="voice-session", key_func=session_key)
project_limited = limiter.shared_limit(project_limit, scope="voice-project", key_func=project_key)
