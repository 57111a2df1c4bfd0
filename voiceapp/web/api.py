"""REST API under /api/v1/voice: sessions, turns (audio in, long-poll out) and reply audio."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from flask import Blueprint, Flask, Response, current_app, jsonify, request, url_for

from ..audio import decode
from ..errors import BadRequest, NotFound, PayloadTooLarge
from ..events import Event, EventType
from ..pipeline import start_text_turn, start_turn
from ..runtime import Runtime
from ..storage import interactions, projects
from ..storage.audio import REPLIES_BUCKET, get_audio, parse_audio_id
from ..storage.projects import LANGUAGE_RE, PROJECT_RE
from ..tts import fresh
from ..turns import TERMINAL, TurnStatus
from ..urls import audio_url
from ..utterances import UtteranceStream
from . import access
from .auth import bearer, issue_token, require_session_token
from .hub import get_hub
from .ratelimit import ip_limit, limiter, project_limited, session_limited
from .safejson import read_body, request_json
from .textinput import read_text_body

bp = Blueprint("voice_api", __name__, url_prefix="/api/v1/voice")

LIMIT_RE = re.compile(r"^[0-9]{1,9}$")


def _rt() -> Runtime:
    return current_app.extensions["voiceapp"]


def _json_body() -> dict[str, Any]:
    body = request_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("expected a JSON object body", code="invalid_json")
    return body


def _string_field(body: dict[str, Any], name: str, pattern: re.Pattern[str], default: str | None = None) -> str | None:
    """A body field that must be a plain string matching `pattern` (no objects: no operator injection)."""
    value = body.get(name, default)
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.match(value):
        raise BadRequest(f"field '{name}' must be a string matching {pattern.pattern}", code="invalid_field")
    return value


def _session_view(rt: Runtime, session: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    sid = session["session_id"]
    view = {
        "session_id": sid,
        "project": session["project"],
        "language": session.get("language"),
        "voice": session.get("voice"),
        "status": session.get("status"),
        "expires_at": session["expires_at"].isoformat(),
        "websocket_url": websocket_url(rt, sid),
        "text_max_chars": rt.settings.text_max_chars,  # the widget's text box caps typing at it
    }
    if token:
        view.update(token=token, token_expires_in=rt.settings.token_ttl)
    return view


def websocket_url(rt: Runtime, session_id: str) -> str:
    """Where the client opens the session's WebSocket: VOICE_PUBLIC_URL, else the configured host and port.

    Never the request's Host header: anyone can send any Host, and the URL is handed to browsers.
    """
    # A WebSocket rule always builds as an absolute ws:// URL (from the Host header): keep only its path.
    path = urlsplit(url_for("voice_ws.session_events", session_id=session_id)).path
    settings = rt.settings
    if settings.public_url:  # behind a proxy: the address visitors reach, not the one we listen on
        public = urlsplit(settings.public_url)
        return urlunsplit(("wss" if public.scheme == "https" else "ws", public.netloc, path, "", ""))
    host = "127.0.0.1" if settings.api_host in ("", "0.0.0.0", "::") else settings.api_host
    host = f"[{host}]" if ":" in host else host
    port = settings.ws_port if settings.ws_port is not None else settings.api_port
    return urlunsplit(("wss" if request.scheme == "https" else "ws", f"{host}:{port}", path, "", ""))


@bp.post("/sessions")
@limiter.limit(ip_limit)
@project_limited
def create_session():
    """Start a session of a project (its key as bearer unless the project is open); returns a scoped token."""
    rt = _rt()
    body = _json_body()
    project = _string_field(body, "project", PROJECT_RE)
    if project is None:
        raise BadRequest("field 'project' is required", code="invalid_field")
    language = _string_field(body, "language", LANGUAGE_RE)  # None: the project's, else the default
    voice = _string_field(body, "voice", re.compile(r"^[A-Za-z0-9_.:-]{1,64}$"))
    session = access.open_session(rt, project, bearer(), language, voice)
    rt.events.open(session["session_id"])
    return jsonify(_session_view(rt, session, issue_token(rt.settings, session["session_id"], project))), 201


@bp.get("/sessions/<session_id>")
@session_limited
def get_session(session_id: str):
    """The session's state."""
    require_session_token(session_id)
    rt = _rt()
    return jsonify(_session_view(rt, access.live_session(rt, session_id)))


@bp.post("/sessions/<session_id>/token")
@session_limited
def refresh_token(session_id: str):
    """A fresh token for a live session (tokens are short-lived; sessions slide on activity)."""
    require_session_token(session_id)
    rt = _rt()
    session = access.use_session(rt, session_id)
    return jsonify(_session_view(rt, session, issue_token(rt.settings, session_id, session["project"])))


@bp.delete("/sessions/<session_id>")
@session_limited
def end_session(session_id: str):
    """End a session; its token stops working and its slot is freed."""
    require_session_token(session_id)
    access.close_session(_rt(), session_id)
    return Response(status=204)


@bp.get("/sessions/<session_id>/history")
@session_limited
def history(session_id: str):
    """The session's turns, newest first (?limit=, at most 100)."""
    require_session_token(session_id)
    rt = _rt()
    access.live_session(rt, session_id)
    limit = request.args.get("limit", "50")
    if not LIMIT_RE.match(limit):  # ASCII digits only: int() of a 5,000-digit or '²' string raises
        raise BadRequest("'limit' must be a positive integer (at most 100 is used)", code="invalid_field")
    turns = interactions.recent_turns(rt.db, rt.settings, session_id, min(max(int(limit), 1), 100))
    return jsonify({"session_id": session_id, "turns": [_turn_view(t) for t in turns]})


@bp.post("/sessions/<session_id>/turns")
@limiter.limit(ip_limit)
@project_limited
def post_turn(session_id: str):
    """Accept one spoken utterance (WAV, FLAC, MP3, Ogg, WebM) or a typed question (JSON) and start its turn."""
    require_session_token(session_id)
    rt = _rt()
    if request.mimetype == "application/json":
        text = read_text_body(request.stream, rt.settings)  # checked before the session is touched
        session = access.use_session(rt, session_id)
        access.admit_turn(rt)
        turn_id = start_text_turn(rt, session, text)
    else:
        session = access.use_session(rt, session_id)
        access.admit_turn(rt)
        audio = decode(read_body(cache=False), rt.settings)
        turn_id = start_turn(rt, session, audio)
    return jsonify(
        {
            "turn_id": turn_id,
            "status": TurnStatus.QUEUED.value,
            "status_url": url_for("voice_api.get_turn", session_id=session_id, turn_id=turn_id),
        }
    ), 202


def _turn_view(turn: Mapping[str, Any]) -> dict[str, Any]:
    audio_id = turn.get("audio_id")
    return {
        "turn_id": turn["turn_id"],
        "session_id": turn["session_id"],
        "status": turn.get("status"),
        "source": turn.get("source"),
        "transcript": turn.get("transcript"),
        "intent": turn.get("intent"),
        "reply_text": turn.get("reply_text"),
        "sources": turn.get("sources", []),
        "audio_url": audio_url(turn["session_id"], audio_id) if audio_id else None,
        "timings": turn.get("timings", {}),
        "error": turn.get("error"),
    }


def _wait_seconds(max_wait: float) -> float:
    raw = request.args.get("wait", "0")
    try:
        wait = float(raw)
    except ValueError:
        raise BadRequest("'wait' must be a number of seconds", code="invalid_field") from None
    if wait != wait:  # NaN
        raise BadRequest("'wait' must be a number of seconds", code="invalid_field")
    return min(max(wait, 0.0), max_wait)


@bp.get("/sessions/<session_id>/turns/<turn_id>")
@session_limited
def get_turn(session_id: str, turn_id: str):
    """A turn's result; with ?wait=S, hold the request until it finishes or S seconds pass."""
    require_session_token(session_id)
    rt = _rt()
    access.live_session(rt, session_id)
    wait = _wait_seconds(rt.settings.turn_wait_max)
    turn = _find_turn(rt, session_id, turn_id)
    if turn.get("status") not in TERMINAL and wait > 0:
        listener = get_hub(current_app).listen(session_id)
        try:
            turn = _find_turn(rt, session_id, turn_id)
            deadline = time.monotonic() + wait
            while turn.get("status") not in TERMINAL and (left := deadline - time.monotonic()) > 0:
                event = listener.get(timeout=left)
                if event and event.turn_id == turn_id and event.type in (EventType.DONE, EventType.ERROR):
                    turn = _find_turn(rt, session_id, turn_id, ended=event)
        finally:
            listener.close()
    return jsonify(_turn_view(turn))


def _find_turn(rt: Runtime, session_id: str, turn_id: str, ended: Event | None = None) -> Mapping[str, Any]:
    """The turn; a live utterance still being recognised shows as `listening` (no_speech once it ends empty)."""
    try:
        return interactions.get_turn(rt.db, rt.settings, session_id, turn_id)
    except NotFound:
        if not UtteranceStream(rt.redis, interactions.check_turn_id(turn_id)).exists():
            raise
    status = ended.data.get("status", "error") if ended is not None else "listening"
    return {"turn_id": turn_id, "session_id": session_id, "status": status}


@bp.get("/sessions/<session_id>/audio/<audio_id>")
@session_limited
def get_reply_audio(session_id: str, audio_id: str):
    """Reply audio of one of this session's turns: its Redis copy while its GridFS store lands, else GridFS."""
    require_session_token(session_id)
    rt = _rt()
    access.live_session(rt, session_id)
    audio_id = str(parse_audio_id(audio_id))  # 24 hex characters, or a 404 before any store is asked
    kept = fresh.read(rt.redis, audio_id)
    if kept is not None:
        data, mime_type, owner = kept
    else:
        data, info = get_audio(rt.db, audio_id, bucket=REPLIES_BUCKET)
        mime_type, owner = info["content_type"], info["metadata"].get("session_id")
    if owner != session_id and not interactions.session_has_audio(rt.db, rt.settings, session_id, audio_id):
        raise NotFound("no such audio in this session", code="audio_not_found")
    return Response(data, mimetype=mime_type, headers={"Cache-Control": "private, max-age=3600"})


SOURCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.,()-]{0,127}$")
FORMATS = {"markdown", "text", "html"}


@bp.post("/projects/<project>/knowledge")
@limiter.limit(ip_limit)
def add_knowledge(project: str):
    """Load documents into a project's knowledge base (its key is required, even for open projects)."""
    from ..dialog.knowledge import add_documents

    rt = _rt()
    projects.authorize(rt.db, rt.settings, project, bearer(), admin=True)
    # The size is also enforced while the body is read (a chunked upload has no Content-Length): safejson.
    if (request.content_length or 0) > rt.settings.kb_max_bytes:
        raise PayloadTooLarge(f"knowledge uploads are limited to {rt.settings.kb_max_bytes} bytes (VOICE_KB_MAX_BYTES)")
    documents = _json_body().get("documents")
    if not isinstance(documents, list) or not documents:
        raise BadRequest("'documents' must be a non-empty list of {source, text, format?}", code="invalid_field")
    loaded = 0
    for doc in documents:
        if not isinstance(doc, dict):
            raise BadRequest("each document must be an object {source, text, format?}", code="invalid_field")
        source = _string_field(doc, "source", SOURCE_RE)
        text, fmt = doc.get("text"), doc.get("format")
        bad_format = fmt is not None and (not isinstance(fmt, str) or fmt not in FORMATS)  # {"$ne": null} is no format
        if source is None or not isinstance(text, str) or bad_format:
            raise BadRequest(
                "a document needs a 'source' name, a 'text' string and an optional 'format' "
                f"({', '.join(sorted(FORMATS))})",
                code="invalid_field",
            )
        loaded += add_documents(rt.db, rt.settings, project, [(source, text)], fmt)
    return jsonify({"project": project, "documents": len(documents), "passages": loaded}), 201


@bp.delete("/projects/<project>/sessions/<session_id>")
@limiter.limit(ip_limit)
def forget_session(project: str, session_id: str):
    """Erase one visitor's session, turns, recordings and reply audio (privacy request; the project key is required)."""
    erased = access.forget_session(_rt(), project, bearer(), session_id)
    return jsonify({"project": project, "session_id": session_id, "erased": erased})


@bp.get("/projects/<project>/unanswered")
@limiter.limit(ip_limit)
def list_unanswered(project: str):
    """The project's refused questions, near-duplicates grouped, most frequent first (its key is required)."""
    from ..storage.unanswered import grouped, parse_since

    rt = _rt()
    projects.authorize(rt.db, rt.settings, project, bearer(), admin=True)
    since = request.args.get("since", "7d")
    groups = grouped(rt.db, rt.settings, project, parse_since(since))
    return jsonify({"project": project, "since": since, "groups": groups})


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI document of this API."""
    return jsonify(openapi_document())


@cache
def openapi_document() -> dict[str, Any]:
    """voiceapp/web/openapi.yaml, parsed once."""
    return yaml.safe_load(resources.files(__package__).joinpath("openapi.yaml").read_text(encoding="utf-8"))


def init_app(app: Flask) -> None:
    """Mount the REST API."""
    app.register_blueprint(bp)
