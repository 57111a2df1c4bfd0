"""Routes of the console; every data route checks the viewer before reading anything."""

from __future__ import annotations

import io
from typing import Any

from bson import ObjectId
from flask import Blueprint, Response, current_app, g, jsonify, redirect, render_template, request, send_file, url_for
from pymongo.database import Database
from redis.exceptions import RedisError

from voiceapp.config import Settings
from voiceapp.dialog import knowledge
from voiceapp.dialog.answer import respond
from voiceapp.errors import AuthError, BadRequest, ForbiddenError, NotFound, VoiceError
from voiceapp.events import EventBus
from voiceapp.storage.audio import REPLIES_BUCKET, UPLOADS_BUCKET, get_audio
from voiceapp.storage.projects import check_project_name

from ..ratelimit import ip_limit, limiter
from . import auth, data, forms
from .charts import bar_chart

bp = Blueprint("voice_admin", __name__, url_prefix="/admin", template_folder="templates", static_folder="static")
AUDIO_KINDS = {"visitor": UPLOADS_BUCKET, "reply": REPLIES_BUCKET}
MAX_QUESTION_CHARS = 500
MAX_EVENT_SESSIONS = 200
SESSIONS_PER_PAGE = 50  # a busy day is still a page a browser renders at once
# Inline SVG needs no script; audio and styles come from this server only.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _settings() -> Settings:
    return current_app.extensions["voiceapp"].settings


def _db() -> Database:
    return current_app.extensions["voiceapp"].db


@bp.before_request
def _load_viewer() -> None:
    project = (request.view_args or {}).get("project")
    g.admin_viewer = auth.viewer_from_request(_db(), _settings(), request, project)


@bp.after_request
def _harden(response: Response) -> Response:
    viewer: auth.Viewer | None = g.get("admin_viewer")
    if viewer is not None and viewer.fresh and not viewer.via_bearer and "Set-Cookie" not in response.headers:
        auth.set_cookie(response, _settings(), viewer, secure=_secure())
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    return response


def _secure() -> bool:
    """Mark the cookie Secure over HTTPS, also behind a TLS-terminating proxy named by VOICE_PUBLIC_URL."""
    return request.is_secure or _settings().public_url.lower().startswith("https://")


def _viewer() -> auth.Viewer:
    return g.admin_viewer


def _sign_in_page(status: int, message: str = "", project: str = "") -> tuple[str, int]:
    return render_template("admin/sign_in.html", viewer=_viewer(), message=message, project=project), status


def _denied(project: str):
    """The sign-in page (401/403, no data) unless the viewer may see `project`; None when allowed."""
    try:
        auth.require(_viewer(), project)
    except (AuthError, ForbiddenError) as err:
        if forms.wants_json():
            raise
        return _sign_in_page(err.status, err.message if _viewer().signed_in else "", project)
    return None


def _page(project: str, template: str, status: int = 200, *, api: dict[str, Any] | None = None, **context: Any):
    """Render a page of an allowed project, or its `api` data as JSON when a script asks for it."""
    if api is not None and forms.wants_json():
        return jsonify({"project": project, **forms.jsonable(api)}), status
    return render_template(template, viewer=_viewer(), project=project, **context), status


def _guard(project: str) -> str:
    """The checked project for a data or form route (raises the JSON error otherwise)."""
    project = check_project_name(project)
    auth.require(_viewer(), project)
    return project


# ---------------------------------------------------------------- sign-in


@bp.get("/")
def home():
    """The signed-in project's conversations, the operator's project list, or the sign-in form."""
    viewer = _viewer()
    if viewer.operator and request.args.get("project"):
        return redirect(url_for(".conversations", project=check_project_name(request.args["project"])))
    if viewer.operator:
        names = data.known_projects(_db(), _settings())
        return render_template(
            "admin/projects.html", viewer=viewer, projects=data.project_summaries(_db(), _settings(), names)
        )
    if viewer.signed_in:
        return redirect(url_for(".conversations", project=viewer.project))
    return _sign_in_page(200)


@bp.post("/sign-in")
@limiter.limit(ip_limit)  # keys are long and random; this still keeps key guessing slow and loud
def sign_in():
    """Check the key from the form; on success, the signed cookie replaces the anonymous one."""
    auth.check_csrf(_viewer(), request.form.get("csrf_token"))
    project = (request.form.get("project") or "").strip()
    try:
        scope = auth.check_key(_db(), _settings(), project, request.form.get("key") or "")
    except VoiceError as err:
        return _sign_in_page(err.status, err.message, project)
    viewer = auth.signed_in_viewer(scope, (request.form.get("key") or "").strip())
    # The operator lands on the project named in the form, if any, else on the list of projects.
    landing = project if scope == auth.OPERATOR else scope
    target = url_for(".conversations", project=landing) if landing else url_for(".home")
    response = redirect(target, code=303)
    auth.set_cookie(response, _settings(), viewer, secure=_secure())
    return response


@bp.post("/sign-out")
def sign_out():
    """Forget the sign-in."""
    auth.check_csrf(_viewer(), request.form.get("csrf_token"))
    response = redirect(url_for(".home"), code=303)
    auth.set_cookie(response, _settings(), auth.Viewer(None, auth.signed_in_viewer("").csrf), secure=_secure())
    return response


# ---------------------------------------------------------------- conversations


def _retained(db: Database, bucket: str, ids: list[str]) -> set[str]:
    """Which of these GridFS ids still exist (uploads and replies expire)."""
    oids = [ObjectId(i) for i in ids if ObjectId.is_valid(i)]
    if not oids:
        return set()
    return {str(row["_id"]) for row in db[f"{bucket}.files"].find({"_id": {"$in": oids}}, {"_id": 1})}


@bp.get("/p/<project>/")
def conversations(project: str):
    """Sessions of a day or week with every turn, its timings, errors and audio."""
    when = data.period(request.args.get("day"), request.args.get("span"))
    project = check_project_name(project)
    if (denied := _denied(project)) is not None:
        return denied
    db, settings = _db(), _settings()
    session_id = request.args.get("session") or None
    convs = data.conversations(db, settings, project, when, session_id)
    truncated = sum(len(c.turns) for c in convs) >= data.MAX_TURNS
    pages = max(1, -(-len(convs) // SESSIONS_PER_PAGE))
    page = forms.page_number(pages)
    shown = convs[(page - 1) * SESSIONS_PER_PAGE : page * SESSIONS_PER_PAGE]
    turns = [t for c in shown for t in c.turns]
    uploads = _retained(db, UPLOADS_BUCKET, [t["upload_id"] for t in turns if t.get("upload_id")])
    replies = _retained(db, REPLIES_BUCKET, [a for t in turns for a in data.audio_ids(t)])
    return _page(
        project,
        "admin/conversations.html",
        when=when,
        conversations=shown,
        session_count=len(convs),
        page=page,
        pages=pages,
        uploads=uploads,
        replies=replies,
        audio_ids=data.audio_ids,
        stages=data.STAGES,
        session_id=session_id,
        truncated=truncated,
        max_turns=data.MAX_TURNS,
        api={"period": when, "conversations": shown, "page": page, "pages": pages, "truncated": truncated},
    )


@bp.get("/p/<project>/audio/<kind>/<audio_id>")
def audio(project: str, kind: str, audio_id: str):
    """A visitor's upload or a reply's audio, only if a turn of this project names it."""
    project = _guard(project)
    bucket = AUDIO_KINDS.get(kind)
    if bucket is None or not data.audio_belongs(_db(), _settings(), project, bucket, audio_id):
        raise NotFound("audio not found (or no longer retained)", code="audio_not_found")
    blob, info = get_audio(_db(), audio_id, bucket)
    return send_file(io.BytesIO(blob), mimetype=info["content_type"], conditional=True, max_age=0)


# ---------------------------------------------------------------- unanswered


@bp.get("/p/<project>/unanswered")
def unanswered(project: str):
    """Questions the assistant could not answer, grouped and counted, each with an 'add an answer' link."""
    when = data.period(request.args.get("day"), request.args.get("span") or "week")
    project = check_project_name(project)
    if (denied := _denied(project)) is not None:
        return denied
    questions = data.unanswered_questions(_db(), _settings(), project, when)
    return _page(
        project, "admin/unanswered.html", when=when, questions=questions, api={"period": when, "questions": questions}
    )


# ---------------------------------------------------------------- knowledge


def _knowledge_context(project: str, **extra: Any) -> dict[str, Any]:
    db, settings = _db(), _settings()
    source = request.args.get("source") or ""
    passages = []
    if source:
        rows = db[settings.knowledge_collection].find({"project": project, "source": source}, {"_id": 0})
        passages = sorted(rows, key=lambda r: r.get("position", 0))
    # Only the 'add an answer' link prefills: a tried question must not become a draft document.
    question = (request.args.get("question") or "")[:MAX_QUESTION_CHARS]
    return {
        "sources": sorted(knowledge.list_sources(db, settings, project).items()),
        "source": source,
        "passages": passages,
        "question": question,
        "draft": f"# {question}\n\n" if question else "",
        "max_bytes": settings.kb_max_bytes,
        **extra,
    }


@bp.get("/p/<project>/knowledge")
def knowledge_page(project: str):
    """Documents and their passages, upload/replace/delete forms and the 'try a question' box."""
    project = check_project_name(project)
    if (denied := _denied(project)) is not None:
        return denied
    context = _knowledge_context(project)
    api = {"sources": dict(context["sources"]), "source": context["source"], "passages": context["passages"]}
    return _page(project, "admin/knowledge.html", api=api, **context)


def _form_result(project: str, action, ok_message: str):
    """Run a knowledge form action; errors re-show the page with the message and a 4xx status."""
    try:
        auth.check_csrf(_viewer(), request.form.get("csrf_token"))
        detail = action()
    except auth.CsrfError:
        raise
    except VoiceError as err:
        return _page(project, "admin/knowledge.html", err.status, error=err.message, **_knowledge_context(project))
    return _page(project, "admin/knowledge.html", notice=ok_message.format(**detail), **_knowledge_context(project))


@bp.post("/p/<project>/knowledge/upload")
def knowledge_upload(project: str):
    """Add a document, or replace the one with the same name."""
    project = _guard(project)

    def action() -> dict[str, Any]:
        name, text = forms.uploaded_text(_settings().kb_max_bytes)
        source = forms.checked_source(request.form.get("source") or name)
        fmt = request.form.get("format") or None
        if fmt not in (None, "markdown", "text", "html"):
            raise BadRequest("format must be markdown, text or html", code="invalid_field")
        count = knowledge.add_documents(_db(), _settings(), project, [(source, text)], fmt)  # type: ignore[arg-type]  # checked just above
        return {"source": source, "count": count}

    return _form_result(project, action, "Saved {source}: {count} passages.")


@bp.post("/p/<project>/knowledge/delete")
def knowledge_delete(project: str):
    """Delete one document's passages."""
    project = _guard(project)

    def action() -> dict[str, Any]:
        source = forms.checked_source(request.form.get("source"))
        return {"source": source, "count": knowledge.remove_documents(_db(), _settings(), project, [source])}

    return _form_result(project, action, "Deleted {source} ({count} passages).")


def _passage_of(project: str, source_ref: str) -> dict | None:
    """The passage a reply source 'file#Section' names (its section's last part)."""
    source, _, section = source_ref.partition("#")
    for row in _db()[_settings().knowledge_collection].find({"project": project, "source": source}, {"_id": 0}):
        if row.get("section", "").split(" > ")[-1] == section:
            return row
    return None


@bp.post("/p/<project>/knowledge/try")
def knowledge_try(project: str):
    """Answer a typed question as a visitor would hear it, with the passage chosen and its score."""
    project = _guard(project)

    def action() -> dict[str, Any]:
        text = (request.form.get("question") or "").strip()
        if not text or len(text) > MAX_QUESTION_CHARS:
            raise BadRequest(f"type a question of 1-{MAX_QUESTION_CHARS} characters", code="invalid_field")
        reply = respond(_db(), _settings(), project, text, [])
        g.admin_trial = {
            "question": text,
            "reply": reply,
            "passages": [(ref, _passage_of(project, ref)) for ref in reply.sources],
        }
        return {}

    return _form_result(project, action, "")


@bp.app_template_global()
def admin_trial() -> dict | None:
    """The 'try a question' result of this request, if any."""
    return g.get("admin_trial")


# ---------------------------------------------------------------- costs and speed


def _first_audio(settings: Settings, turns: list[dict]) -> list[float]:
    """End of speech -> first audio per turn, from the turn or its session's kept events (newest sessions first)."""
    bus = EventBus(current_app.extensions["voiceapp"].redis, retention_s=settings.session_timeout)
    events: dict[str, list] = {}
    values = []
    redis_ok = True
    for turn in reversed(turns):
        sid = turn["session_id"]
        if sid not in events:
            # Each session costs one Redis read: cap them, and stop at the first failure (a down Redis would
            # otherwise cost a timeout per session); the figure then covers fewer turns, the page still loads.
            events[sid] = []
            if redis_ok and len(events) <= MAX_EVENT_SESSIONS:
                try:
                    events[sid] = bus.replay(sid)
                except RedisError:
                    redis_ok = False
        value = data.first_audio_seconds(turn, events[sid])
        if value is not None:
            values.append(value)
    return values


@bp.get("/p/<project>/costs")
def costs(project: str):
    """TTS cost per day and provider against the alert threshold and budget, cache hits, speed, turns per hour."""
    when = data.period(request.args.get("day"), request.args.get("span") or "week")
    project = check_project_name(project)
    if (denied := _denied(project)) is not None:
        return denied
    db, settings = _db(), _settings()
    days = data.daily_costs(db, settings, project, when)
    turns = data.turns_in(db, settings, project, when)
    hits, misses = data.cache_ratio(turns)
    first_audio = data.spread("first_audio_s", _first_audio(settings, turns))
    per_hour = data.turns_per_hour(turns, when)
    hours = max(1.0, (when.end - when.start).total_seconds() / 3600)
    budget = settings.project_daily_budget or None
    charts = {
        "cost": bar_chart(
            "TTS cost per day (USD)", [(d.day[5:], d.cost_usd) for d in days], limit=budget, limit_label="budget"
        ),
        "day_total": bar_chart(
            "All projects' TTS cost per day (USD)",
            [(d.day[5:], d.day_total_usd) for d in days],
            limit=settings.cost_alert_threshold,
            limit_label="alert",
        ),
        "per_hour": bar_chart("Turns per hour" if when.span == "day" else "Turns per day", per_hour),
    }
    numbers: dict[str, Any] = {
        "period": when,
        "days": days,
        "providers": sorted({p for d in days for p in d.providers}),
        "hits": hits,
        "misses": misses,
        "hit_ratio": (hits / (hits + misses)) if hits + misses else None,
        "first_audio": first_audio,
        "stages": data.stage_spreads(turns),
        "turn_count": len(turns),
        "turns_per_hour": round(len(turns) / hours, 2),
        "per_hour": per_hour,
        "threshold": settings.cost_alert_threshold,
        "budget": budget,
        "tracking": settings.enable_cost_tracking,
    }
    return _page(project, "admin/costs.html", when=when, charts=charts, api=numbers, **numbers)
