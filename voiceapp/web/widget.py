"""The voice widget bundle (/widget/voice/dist/voice-widget.js) and its demo page (/widget/voice/demo)."""

from __future__ import annotations

import re
from html import escape
from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, request, send_from_directory

from ..errors import BadRequest, NotFound
from ..storage.projects import PROJECT_RE

BUNDLE = "voice-widget.js"
# Built by `npm run build` in widget/voice (next to the package in a source checkout or editable install).
DEFAULT_DIST = Path(__file__).resolve().parents[2] / "widget" / "voice" / "dist"
MODES = ("push-to-talk", "hands-free")
LANG_RE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})?$")

bp = Blueprint("voice_widget", __name__, url_prefix="/widget/voice")

DEMO_PAGE = """<!doctype html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>voiceapp: voice widget demo</title>
<style>
  body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 720px; margin: 40px auto; padding: 0 20px; color: #1b1f24; }}
  code, pre {{ background: #f3f6f9; border-radius: 6px; }}
  pre {{ padding: 12px; overflow-x: auto; }}
</style>
</head>
<body>
<main>
  <h1>Voice widget demo</h1>
  <p>Project <code>{project}</code>, mode <code>{mode}</code>. Press the microphone button (bottom right),
  ask e.g. <em>"What time do you open on Saturday?"</em> and listen to the answer.
  Switch to <a href="?project={project}&amp;mode={other_mode}&amp;lang={lang}">{other_mode}</a>; the widget
  speaks the page's language (<code>?lang=ru</code> for Russian). You can also type the question in the box.</p>
  <p>Embed it in any page with one tag:</p>
  <pre>&lt;script src="{origin}/widget/voice/dist/voice-widget.js"
        data-project="{project}" data-endpoint="{origin}" defer&gt;&lt;/script&gt;</pre>
</main>
<script src="{bundle_url}" data-project="{project}" data-endpoint="" data-mode="{mode}" defer></script>
</body>
</html>
"""


def dist_dir(app: Flask) -> Path:
    """Where the built bundle lives (VOICE_WIDGET_DIST in app.config overrides, e.g. in a container image)."""
    return Path(app.config.get("VOICE_WIDGET_DIST") or DEFAULT_DIST)


@bp.get(f"/dist/{BUNDLE}")
def bundle():
    """The one-file widget; revalidated on each load so a rebuilt widget is picked up at once."""
    directory = dist_dir(current_app)
    if not (directory / BUNDLE).is_file():
        raise NotFound(
            "the voice widget is not built: run `npm ci && npm run build` in widget/voice", code="widget_not_built"
        )
    response = send_from_directory(directory, BUNDLE, mimetype="text/javascript", max_age=0, conditional=True)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["Access-Control-Allow-Origin"] = "*"  # embedded from any site; it carries no secrets
    return response


@bp.get("/demo")
def demo():
    """A page embedding the widget against this server (?project=, ?mode=push-to-talk|hands-free, ?lang=en|ru)."""
    project = request.args.get("project", "demo")
    mode = request.args.get("mode", "push-to-talk")
    lang = request.args.get("lang", "en")  # the page's <html lang>: the widget speaks it unless told otherwise
    if not LANG_RE.match(lang):
        raise BadRequest(f"'lang' must match {LANG_RE.pattern}", code="invalid_field")
    if not PROJECT_RE.match(project):
        raise BadRequest(f"'project' must match {PROJECT_RE.pattern}", code="invalid_field")
    if mode not in MODES:
        raise BadRequest(f"'mode' must be one of {', '.join(MODES)}", code="invalid_field")
    other = MODES[1 - MODES.index(mode)]
    html = DEMO_PAGE.format(
        project=escape(project),
        mode=mode,
        lang=lang,
        other_mode=other,
        origin=escape(request.host_url.rstrip("/")),
        bundle_url=f"{bp.url_prefix}/dist/{BUNDLE}",
    )
    return Response(html, mimetype="text/html")


def init_app(app: Flask) -> None:
    """Mount the widget bundle and the demo page."""
    app.register_blueprint(bp)
