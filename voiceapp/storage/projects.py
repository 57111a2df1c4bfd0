"""Projects: hashed API keys that may open sessions, and the browser origins each project allows."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Any

from pymongo.database import Database

from voiceapp.config import Settings
from voiceapp.errors import AuthError, BadRequest, ForbiddenError

from .sessions import utcnow

PROJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
KEY_PREFIX = "vk_"
LANGUAGE_RE = re.compile(r"^(auto|[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})?)$")  # "auto": detect per utterance


def check_project_name(project: Any) -> str:
    """The project name if it is a plain identifier string (never an object: no operator injection)."""
    if not isinstance(project, str) or not PROJECT_RE.match(project):
        raise BadRequest(f"project must be a string matching {PROJECT_RE.pattern}", code="invalid_field")
    return project


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(
    db: Database, settings: Settings, project: str, origins: tuple[str, ...] = (), language: str | None = None
) -> str:
    """Add a new key to the project (creating it); returns the key, which is stored only hashed."""
    project = check_project_name(project)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    update: dict[str, Any] = {"$push": {"key_hashes": _hash(key)}, "$setOnInsert": {"created_at": utcnow()}}
    fields: dict[str, Any] = {}
    if origins:
        fields["origins"] = list(origins)
    if language:
        fields["language"] = check_language(language)
    if fields:
        update["$set"] = fields
    db[settings.projects_collection].update_one({"project": project}, update, upsert=True)
    return key


def set_origins(db: Database, settings: Settings, project: str, origins: tuple[str, ...]) -> None:
    """Replace the project's browser origin allow-list (empty: any origin)."""
    project = check_project_name(project)
    db[settings.projects_collection].update_one({"project": project}, {"$set": {"origins": list(origins)}}, upsert=True)


def check_language(language: Any) -> str:
    """A language tag such as "ru", "en-US" or "auto" (detect per utterance)."""
    if not isinstance(language, str) or not LANGUAGE_RE.match(language):
        raise BadRequest(f"language must be a string matching {LANGUAGE_RE.pattern}", code="invalid_field")
    return language


def set_language(db: Database, settings: Settings, project: str, language: str | None) -> None:
    """Set (or with None clear) the project's default session language."""
    project = check_project_name(project)
    update = {"$set": {"language": check_language(language)}} if language else {"$unset": {"language": ""}}
    db[settings.projects_collection].update_one({"project": project}, update, upsert=True)


def project_language(db: Database, settings: Settings, project: str) -> str | None:
    """The project's default session language, or None when it names none."""
    doc = get_project(db, settings, project)
    return (doc or {}).get("language") or None


def set_quota(db: Database, settings: Settings, project: str, sessions: int | None, websockets: int | None) -> None:
    """Give the project its own session / WebSocket quota (None keeps the VOICE_PROJECT_* default)."""
    project = check_project_name(project)
    for name, value in (("sessions", sessions), ("websockets", websockets)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise BadRequest(f"quota {name} must be a positive integer", code="invalid_field")
    changes = {f"quota.{n}": v for n, v in (("sessions", sessions), ("websockets", websockets)) if v is not None}
    if changes:
        db[settings.projects_collection].update_one({"project": project}, {"$set": changes}, upsert=True)


def quota(db: Database, settings: Settings, project: str) -> dict[str, int]:
    """The project's own quotas ({} when it uses the defaults)."""
    doc = get_project(db, settings, project) or {}
    own = doc.get("quota")
    return {k: v for k, v in own.items() if isinstance(v, int) and v > 0} if isinstance(own, dict) else {}


def get_project(db: Database, settings: Settings, project: str) -> dict | None:
    """The project's document without key hashes, or None."""
    project = check_project_name(project)
    return db[settings.projects_collection].find_one({"project": project}, {"_id": 0, "key_hashes": 0})


def authorize(db: Database, settings: Settings, project: str, key: str | None, *, admin: bool = False) -> None:
    """Allow acting for `project` with `key`; open projects need no key to open sessions (`admin` always does)."""
    project = check_project_name(project)
    if project in settings.open_projects and not admin:
        return
    if not key:
        raise AuthError(
            f"project '{project}' needs its key: send 'Authorization: Bearer <project key>'",
            code="project_key_required",
        )
    doc = db[settings.projects_collection].find_one({"project": project}, {"key_hashes": 1})
    hashes = doc.get("key_hashes", []) if doc else []
    digest = _hash(key)
    if not any(hmac.compare_digest(digest, h) for h in hashes):
        raise ForbiddenError("invalid key for this project", code="invalid_project_key")


def allowed_origins(db: Database, settings: Settings, project: str) -> tuple[str, ...]:
    """Origins a browser may call this project from; empty means any."""
    doc = get_project(db, settings, project)
    if doc and doc.get("origins"):
        return tuple(doc["origins"])
    return settings.allowed_origins
