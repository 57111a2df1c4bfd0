"""Session tokens: short-lived, signed, and scoped to exactly one session."""
from __future__ import annotations

from flask import current_app, request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from ..config import Settings
from ..errors import AuthError, ForbiddenError

_SALT = "voiceapp.session-token.v1"


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.secret_key, salt=_SALT)


def issue_token(settings: Settings, session_id: str) -> str:
    """A token that opens this session only."""
    return _serializer(settings).dumps({"sid": session_id})


def check_token(settings: Settings, token: str | None, session_id: str) -> None:
    """Raise AuthError unless `token` is a valid, unexpired token of `session_id`."""
    if not token:
        raise AuthError("missing session token: send 'Authorization: Bearer <token>' or ?token=")
    try:
        claims = _serializer(settings).loads(token, max_age=settings.session_timeout)
    except SignatureExpired:
        raise AuthError("session token expired; start a new session", code="token_expired") from None
    except BadSignature:
        raise AuthError("invalid session token", code="invalid_token") from None
    if not isinstance(claims, dict) or claims.get("sid") != session_id:
        raise ForbiddenError("this token belongs to another session", code="token_wrong_session")


def request_token() -> str | None:
    """The token of the current request: bearer header first, then ?token=."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.args.get("token")


def require_session_token(session_id: str) -> None:
    """Check the current request's token against `session_id`."""
    check_token(current_app.extensions["voiceapp"].settings, request_token(), session_id)
