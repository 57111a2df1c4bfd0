"""JSON from untrusted clients: bodies capped before they are read or parsed, parsing that never raises a 500."""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, current_app, request

from ..errors import BadRequest, PayloadTooLarge

# Endpoints whose body is not a small JSON document, with the setting that caps it.
_BODY_CAPS = {
    "voice_api.post_turn": "audio_max_bytes",
    "voice_api.add_knowledge": "kb_max_bytes",
    "voice_admin.knowledge_upload": "kb_max_bytes",
}
# Multipart forms wrap a document in boundaries and fields: room for them, so the view can name the real limit.
_FORM_OVERHEAD = {"voice_admin.knowledge_upload": 64 * 1024}
_UNPARSED = object()
AUDIO_ENDPOINT = "voice_api.post_turn"  # its view streams the body into the decoder (read_body(cache=False))


def loads(raw: bytes | str) -> Any:
    """Parse JSON text; BadRequest (invalid_json) for anything json.loads rejects, absurd nesting included."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested deeper than the interpreter allows
        raise BadRequest("the body is not valid JSON (or nests too deeply)", code="invalid_json") from None


def request_json(silent: bool = False) -> Any:
    """The request's JSON body (parsed once); None when it is not JSON and `silent`, else BadRequest."""
    cached = request.environ.get("voiceapp.json", _UNPARSED)
    if cached is _UNPARSED:
        try:
            cached = loads(read_body()) if request.is_json else None
        except BadRequest:
            cached = None
        request.environ["voiceapp.json"] = cached
    if cached is None and not silent:
        raise BadRequest("expected a JSON body (Content-Type: application/json)", code="invalid_json")
    return cached


def body_cap() -> int:
    """The largest body the current endpoint accepts."""
    settings = current_app.extensions["voiceapp"].settings
    endpoint = request.endpoint or ""
    return getattr(settings, _BODY_CAPS.get(endpoint, "json_max_bytes")) + _FORM_OVERHEAD.get(endpoint, 0)


def read_body(cache: bool = True) -> bytes:
    """The request body, read under its cap; PayloadTooLarge when it is longer, even without a Content-Length."""
    cap = body_cap()
    # Werkzeug stops a chunked body at max_content_length without saying so: read one byte more to tell.
    data = request.get_data(cache=cache)
    if len(data) > cap:
        raise PayloadTooLarge(f"request body over {cap} bytes; send a smaller one")
    return data


def init_app(app: Flask) -> None:
    """Refuse oversized bodies before anything reads, parses or authenticates them."""

    @app.before_request
    def _cap_body():
        cap = body_cap()
        request.max_content_length = cap + 1  # see read_body: also bounds a chunked body (no Content-Length)
        if (request.content_length or 0) > cap:
            raise PayloadTooLarge(f"request body over {cap} bytes; send a smaller one")
        if request.endpoint != AUDIO_ENDPOINT and request.method in ("POST", "PUT", "PATCH"):
            read_body()  # JSON: read under the cap now, so a chunked flood fails here with 413
