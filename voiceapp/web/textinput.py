"""Typed questions (text turns): one check shared by the REST route and the WebSocket."""

from __future__ import annotations

import json
import unicodedata
from typing import IO, Any

from ..config import Settings
from ..errors import BadRequest

# Line breaks and tabs are ordinary typing; every other control character (NUL, ESC, the C0/C1 controls)
# or a lone surrogate would reach the database, the logs and the TTS engine.
_ALLOWED_CONTROLS = {"\t", "\n", "\r"}
# JSON may spell one character as a 12-byte surrogate pair escape: the body cap must allow that.
_JSON_BYTES_PER_CHAR = 12
_JSON_OVERHEAD = 1024


class TextTooLong(BadRequest):
    code = "text_too_long"


def body_limit(settings: Settings) -> int:
    """Largest JSON body a text turn may need: bigger ones are refused before they are parsed."""
    return settings.text_max_chars * _JSON_BYTES_PER_CHAR + _JSON_OVERHEAD


def read_text_body(stream: IO[bytes], settings: Settings) -> str:
    """The checked `text` of a JSON body `{"text": ...}`, read without ever holding more than the cap."""
    limit = body_limit(settings)
    raw = _read_at_most(stream, limit + 1)
    if len(raw) > limit:
        raise _too_long(settings)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: a few KB of nested brackets
        raise BadRequest('expected a JSON object body {"text": "..."}', code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest('expected a JSON object body {"text": "..."}', code="invalid_json")
    if "text" not in body:
        raise BadRequest(
            'a JSON body is a typed question {"text": "..."}; send audio as the raw body (WAV, FLAC, MP3, Ogg, WebM)',
            code="invalid_text",
        )
    return check_text(body["text"], settings)


def _read_at_most(stream: IO[bytes], size: int) -> bytes:
    """Up to `size` bytes of the body: one read may return less (a chunked or slow upload)."""
    chunks: list[bytes] = []
    left = size
    while left > 0:
        chunk = stream.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def check_text(value: Any, settings: Settings) -> str:
    """`value` trimmed, if it is a non-empty string within VOICE_TEXT_MAX_CHARS without control characters."""
    if not isinstance(value, str):
        raise BadRequest("field 'text' must be a string with the question", code="invalid_text")
    text = value.strip()
    if not text:
        raise BadRequest("field 'text' is empty: type a question", code="invalid_text")
    if len(text) > settings.text_max_chars:
        raise _too_long(settings)
    bad = next((ch for ch in text if _is_control(ch)), None)
    if bad is not None:
        raise BadRequest(
            f"field 'text' contains a control character (U+{ord(bad):04X}); send plain text", code="invalid_text"
        )
    return text


def _is_control(ch: str) -> bool:
    return ch not in _ALLOWED_CONTROLS and unicodedata.category(ch) in {"Cc", "Cs"}


def _too_long(settings: Settings) -> TextTooLong:
    return TextTooLong(
        f"the question is longer than {settings.text_max_chars} characters (VOICE_TEXT_MAX_CHARS); shorten it"
    )
