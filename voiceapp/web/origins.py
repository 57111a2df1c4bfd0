"""Browser origins: each project's allow-list, enforced on REST calls (CORS) and WebSocket upgrades."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g, request

from ..errors import ForbiddenError
from ..storage.projects import allowed_origins

API_PREFIX = "/api/v1/voice/"
ALLOW_HEADERS = "Authorization, Content-Type"
ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"


def check_origin(project: str) -> None:
    """ForbiddenError when the request comes from a browser origin the project does not allow."""
    origin = request.headers.get("Origin")
    if not origin:
        return  # not a browser call: nothing to enforce (keys and tokens still apply)
    rt = current_app.extensions["voiceapp"]
    allowed = allowed_origins(rt.db, rt.settings, project)
    # No allow-list means this site only (the widget served by the API itself); '*' must be said explicitly.
    permitted = origin in allowed or "*" in allowed if allowed else _same_site(origin, rt.settings)
    if not permitted:
        raise ForbiddenError(f"origin {origin[:100]} is not allowed for this project", code="origin_not_allowed")
    g.cors_origin = origin


def _same_site(origin: str, settings) -> bool:
    """Whether a browser Origin is the API's own address (the Host it called, VOICE_PUBLIC_URL or API_HOST:API_PORT)."""
    netloc = urlsplit(origin).netloc.lower()
    own = {request.host.lower(), f"{settings.api_host}:{settings.api_port}".lower()}
    if settings.public_url:
        own.add(urlsplit(settings.public_url).netloc.lower())
    return bool(netloc) and netloc in own


def init_app(app: Flask) -> None:
    """Answer preflights and add CORS headers for origins a view has checked."""

    @app.before_request
    def _preflight():
        if request.method == "OPTIONS" and request.path.startswith(API_PREFIX) and request.headers.get("Origin"):
            # Preflights carry no credentials: the real request is checked against the project's list.
            response = Response(status=204)
            response.headers.update(
                {
                    "Access-Control-Allow-Origin": request.headers["Origin"],
                    "Access-Control-Allow-Headers": ALLOW_HEADERS,
                    "Access-Control-Allow-Methods": ALLOW_METHODS,
                    "Access-Control-Max-Age": "600",
                    "Vary": "Origin",
                }
            )
            return response
        return None

    @app.after_request
    def _cors(response: Response) -> Response:
        origin = g.get("cors_origin")
        if origin:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response
