"""Who may open, use and end a session: project keys, origins, concurrent-session slots, queue admission."""

from __future__ import annotations

from typing import Any

from .. import metrics
from ..errors import BadRequest
from ..runtime import Runtime
from ..storage import projects, sessions
from ..stt.registry import language_problem
from .admission import SessionSlots, check_queues
from .origins import check_origin


def slots(rt: Runtime) -> SessionSlots:
    """The cross-process session slots of this deployment."""
    return SessionSlots(rt.redis, rt.settings)


def open_session(rt: Runtime, project: str, key: str | None, language: str | None, voice: str | None) -> dict[str, Any]:
    """Authorize the project (key, origin), check the language, take a slot, then create the session."""
    projects.authorize(rt.db, rt.settings, project, key)
    check_origin(project)
    language = session_language(rt, project, language)
    session = sessions.create_session(rt.db, rt.settings, project, language, voice or "")
    try:
        own = projects.quota(rt.db, rt.settings, project)
        slots(rt).acquire(session["session_id"], project, session["expires_at"].timestamp(), own)
    except Exception:
        sessions.end_session(rt.db, rt.settings, session["session_id"])
        raise
    metrics.SESSIONS_CREATED.inc()
    return session


def session_language(rt: Runtime, project: str, requested: str | None) -> str:
    """The requested language, else the project's, else VOICE_DEFAULT_LANGUAGE; refused when no model can hear it."""
    language = requested or projects.project_language(rt.db, rt.settings, project) or rt.settings.default_language
    problem = language_problem(rt.settings, language)
    if problem:
        # Never serve a language with a model that would turn it into English guesses.
        raise BadRequest(f"language {language!r} is not supported here: {problem}", code="language_unsupported")
    return language


def use_session(rt: Runtime, session_id: str) -> dict[str, Any]:
    """An active session, its expiry slid forward (activity keeps it alive)."""
    session = sessions.touch_session(rt.db, rt.settings, session_id)
    check_origin(session["project"])
    slots(rt).touch(session_id, session["project"], session["expires_at"].timestamp())
    return session


def admit_turn(rt: Runtime) -> None:
    """Refuse a new turn (503 busy + Retry-After) while a stage's queue is too deep."""
    check_queues(rt.redis, rt.settings)


def close_session(rt: Runtime, session_id: str) -> None:
    """End the session and free its slot."""
    project = sessions.get_session(rt.db, rt.settings, session_id)["project"]
    check_origin(project)
    sessions.end_session(rt.db, rt.settings, session_id)
    slots(rt).release(session_id, project)


def live_session(rt: Runtime, session_id: str) -> dict[str, Any]:
    """The session if it is still active (an ended or expired session's token opens nothing), origin checked."""
    session = sessions.get_session(rt.db, rt.settings, session_id)
    check_origin(session["project"])
    return session


def forget_session(rt: Runtime, project: str, key: str | None, session_id: str) -> dict[str, int]:
    """Erase a visitor's session, turns and audio for the project that owns it (its key is required)."""
    from ..storage import retention

    projects.authorize(rt.db, rt.settings, project, key, admin=True)
    session_id = sessions.check_session_id(session_id)
    owned = {"session_id": session_id, "project": project}
    if not (
        rt.db[rt.settings.sessions_collection].find_one(owned, {"_id": 1})
        or rt.db[rt.settings.interactions_collection].find_one(owned, {"_id": 1})
    ):
        raise sessions.SessionNotFound("no such session in this project")
    slots(rt).release(session_id, project)
    return retention.erase_session(rt.db, rt.settings, session_id, rt.redis)
