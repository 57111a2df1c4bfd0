"""Who is looking at the console: a signed sign-in cookie or a Bearer key, and a CSRF token for every form."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from flask import Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from pymongo.database import Database

from voiceapp.config import Settings
from voiceapp.errors import AuthError, ForbiddenError, VoiceError
from voiceapp.storage.projects import authorize, check_project_name

COOKIE = "voiceapp_admin"
OPERATOR = "*"
_SALT = "voiceapp-admin-console"


class CsrfError(VoiceError):
    """A form arrived without the token of the page that showed it."""

    code, status = "csrf_invalid", 403


@dataclass(frozen=True)
class Viewer:
    """The signed-in owner: one project, or OPERATOR for every project; `csrf` is echoed by every form."""

    project: str | None
    csrf: str
    via_bearer: bool = False
    fresh: bool = False  # no valid cookie came with the request: the response must set one
    key_print: str = ""  # which key signed in (a prefix of its stored hash): revoking it signs the viewer out

    @property
    def signed_in(self) -> bool:
        """Whether a key was checked for this viewer."""
        return self.project is not None

    @property
    def operator(self) -> bool:
        """Whether this is the operator key (sees every project)."""
        return self.project == OPERATOR

    def may_see(self, project: str) -> bool:
        """Whether this viewer may read and change `project`."""
        return self.operator or (self.project is not None and self.project == project)


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.secret_key, salt=_SALT)


def is_operator_key(settings: Settings, key: str) -> bool:
    """Whether `key` is VOICE_ADMIN_KEY (never when it is unset)."""
    return bool(settings.admin_key) and hmac.compare_digest(key.encode(), settings.admin_key.encode())


def key_print(key: str) -> str:
    """A prefix of the key's SHA-256, the digest voiceapp.storage.projects stores: names the key, reveals nothing."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _still_valid(db: Database, settings: Settings, scope: str, printed: str) -> bool:
    """Whether the key that signed this cookie in is still the operator key or one of the project's keys."""
    if not printed:
        return False
    if scope == OPERATOR:
        return bool(settings.admin_key) and hmac.compare_digest(printed, key_print(settings.admin_key))
    doc = db[settings.projects_collection].find_one({"project": check_project_name(scope)}, {"key_hashes": 1})
    return any(str(h).startswith(printed) for h in (doc or {}).get("key_hashes", []))


def check_key(db: Database, settings: Settings, project: str, key: str) -> str:
    """The scope `key` grants (OPERATOR or the project); AuthError/ForbiddenError otherwise."""
    key = (key or "").strip()
    if not key:
        raise AuthError("enter the project key", code="project_key_required")
    if is_operator_key(settings, key):
        return OPERATOR
    if not project:
        raise AuthError("enter the project name with its key", code="invalid_field")
    authorize(db, settings, check_project_name(project), key, admin=True)
    return project


def _bearer(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def viewer_from_request(db: Database, settings: Settings, request: Request, project: str | None) -> Viewer:
    """Bearer key (scripts) first, else the sign-in cookie (expired or forged: signed out, with a fresh CSRF token)."""
    token = _bearer(request)
    if token is not None:
        if is_operator_key(settings, token):
            return Viewer(OPERATOR, "", via_bearer=True)
        if project is None:
            raise AuthError("a project key needs a project page, e.g. /admin/p/<project>/", code="invalid_field")
        authorize(db, settings, check_project_name(project), token, admin=True)
        return Viewer(project, "", via_bearer=True)
    raw = request.cookies.get(COOKIE)
    if raw:
        try:
            data = _serializer(settings).loads(raw, max_age=settings.admin_session_ttl)
            scope, csrf, printed = data.get("p"), str(data["c"]), str(data.get("k") or "")
        except (BadSignature, KeyError, TypeError, AttributeError):
            scope = csrf = None  # expired, tampered with or from another secret: treat as signed out
        if csrf and (scope is None or _still_valid(db, settings, scope, printed)):
            return Viewer(scope, csrf, key_print=printed)
    return Viewer(None, secrets.token_urlsafe(24), fresh=True)


def check_csrf(viewer: Viewer, form_token: str | None) -> None:
    """Refuse a cookie-authenticated form whose token does not match the viewer's (Bearer requests need none)."""
    if viewer.via_bearer:
        return
    if not form_token or not viewer.csrf or not hmac.compare_digest(form_token.encode(), viewer.csrf.encode()):
        raise CsrfError("the form's CSRF token is missing or stale: reload the page and try again")


def require(viewer: Viewer, project: str) -> None:
    """Allow `viewer` on `project` or raise (the views turn a signed-out viewer into the sign-in page)."""
    if not viewer.signed_in:
        raise AuthError("sign in with the project key", code="project_key_required")
    if not viewer.may_see(project):
        raise ForbiddenError("this key does not open that project", code="invalid_project_key")


def set_cookie(response: Response, settings: Settings, viewer: Viewer, *, secure: bool) -> None:
    """Store the viewer in a signed, HttpOnly, SameSite=Strict cookie living VOICE_ADMIN_SESSION_TTL seconds."""
    value = _serializer(settings).dumps({"p": viewer.project, "c": viewer.csrf, "k": viewer.key_print})
    response.set_cookie(
        COOKIE,
        value,
        max_age=settings.admin_session_ttl,
        httponly=True,
        samesite="Strict",
        secure=secure,
        path="/admin",
    )


def signed_in_viewer(scope: str, key: str = "") -> Viewer:
    """A new viewer for `scope` with a fresh CSRF token (rotated at sign-in so a pre-sign-in token is useless)."""
    return Viewer(scope, secrets.token_urlsafe(24), fresh=True, key_print=key_print(key) if key else "")
