"""What the console reads from a request (JSON wanted, a page number, an uploaded document) and JSON-able data."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from datetime import datetime
from typing import Any

from flask import request
from markupsafe import Markup

from voiceapp.errors import BadRequest
from voiceapp.storage.sessions import as_utc

MAX_SOURCE_CHARS = 200


def wants_json() -> bool:
    """Scripts ask for the page's data with ?format=json or Accept: application/json."""
    if request.args.get("format") == "json":
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]


def jsonable(value: Any) -> Any:
    """Dataclasses, datetimes and containers as plain JSON values (Markup charts are left out)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {k: jsonable(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items() if not isinstance(v, Markup)}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    return value


def page_number(pages: int) -> int:
    """?page= as 1..pages; BadRequest for anything else."""
    raw = request.args.get("page", "1")
    if not raw.isdigit() or not 1 <= int(raw) <= pages:
        raise BadRequest(f"page must be a number from 1 to {pages}", code="invalid_field")
    return int(raw)


def checked_source(raw: str | None) -> str:
    source = (raw or "").strip()
    if not source or len(source) > MAX_SOURCE_CHARS or source.startswith("$"):
        raise BadRequest(f"the document name must be 1-{MAX_SOURCE_CHARS} characters, e.g. faq.md", "invalid_field")
    return source


def uploaded_text(max_bytes: int) -> tuple[str | None, str]:
    """(file name, UTF-8 text) from the file field, else the text field."""
    upload = request.files.get("file")
    if upload is not None and upload.filename:
        raw = upload.read(max_bytes + 1)
        name = upload.filename
    else:
        raw = (request.form.get("text") or "").encode()
        name = None
    if len(raw) > max_bytes:
        raise BadRequest(f"the document is larger than VOICE_KB_MAX_BYTES={max_bytes}", code="payload_too_large")
    if not raw.strip():
        raise BadRequest("choose a file or paste the document's text", code="invalid_field")
    try:
        return name, raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the document must be UTF-8 text (Markdown, HTML or plain text)", "invalid_field") from None
