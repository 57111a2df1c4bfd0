"""Session tokens: short-lived, signed, and scoped to exactly one session (and its project)."""

from __future__ import annotations

from typing import Any

from flask import current_app, g, request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from ..config import Settings
from ..errors import AuthError, ForbiddenError

_SALT = "voiceapp.session-token.v1"


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.secret_key, salt=_SALT)


def issue_token(settings: Settings, session_id: str, project: str = "") -> str:
    """A token that opens this session only, valid for VOICE_TOKEN_TTL seconds."""
    return _serializer(settings).dumps({"sid": session_id, "prj": project})


def read_token(settings: Settings, token: str | None) -> dict[str, Any]:
    """The claims of a valid, unexpired token; AuthError otherwise."""
    if not token:
        raise AuthError("missing session token: send 'Authorization: Bearer <token>' or ?token=")
    try:
        claims = _serializer(settings).loads(token, max_age=settings.token_ttl)
    except SignatureExpired:
        raise AuthError("session token expired; refresh it or start a new session", code="token_expired") from None
    except BadSignature:
        raise AuthError("invalid session token", code="invalid_token") from None
    if not isinstance(claims, dict) or not isinstance(claims.get("sid"), str):
        raise AuthError("invalid session token", code="invalid_token")
    return claims


def check_token(settings: Settings, token: str | None, session_id: str) -> dict[str, Any]:
    """Claims of `token` if it belongs to `session_id`; AuthError / ForbiddenError otherwise."""
    claims = read_token(settings, token)
    if claims["sid"] != session_id:
        raise ForbiddenError("this token belongs to another session", code="token_wrong_session")
    return claims


def bearer() -> str | None:
    """The bearer credential of the current request, if any."""
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else None


def request_token() -> str | None:
    """The session token of the current request: bearer header first, then ?token=."""
    return bearer() or request.args.get("token")


def require_session_token(session_id: str) -> dict[str, Any]:
    """Check the current request's token against `session_id`; keeps the claims on `g`."""
    g.token_claims = check_token(current_app.extensions["voiceapp"].settings, request_token(), session_id)
    return g.token_claims
