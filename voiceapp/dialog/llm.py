"""Optional LLM phrasing through any OpenAI-compatible chat-completions server (streamed).

Only the retrieved passages go to the model, and it is told to answer from them alone; any error,
timeout or refusal makes the caller fall back to the extractive answer.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

from voiceapp.config import Settings
from voiceapp.dialog.context import Exchange
from voiceapp.errors import DialogError, ProviderUnavailable
from voiceapp.models import Passage

log = logging.getLogger(__name__)

NO_ANSWER = "NO_ANSWER"
SYSTEM_PROMPT = (
    "You are the voice assistant of a website. Answer the visitor's last question using ONLY the "
    "passages below. Reply in one or two short spoken sentences, in the visitor's language, with no "
    "lists, markup or links. If the passages do not contain the answer, reply exactly " + NO_ANSWER + "."
)


def messages_for(question: str, passages: list[Passage], history: list[Exchange]) -> list[dict]:
    """The chat messages: instructions with the passages, earlier turns, then the question."""
    sources = "\n\n".join(f"[{p.source} / {p.section}]\n{p.text}" for p in passages)
    messages = [{"role": "system", "content": f"{SYSTEM_PROMPT}\n\nPassages:\n{sources}"}]
    for exchange in history:
        if exchange.user:
            messages.append({"role": "user", "content": exchange.user})
        if exchange.assistant:
            messages.append({"role": "assistant", "content": exchange.assistant})
    messages.append({"role": "user", "content": question})
    return messages


def _request(settings: Settings, messages: list[dict]) -> urllib.request.Request:
    if not settings.dialog_llm_base_url:
        raise ProviderUnavailable("DIALOG_BACKEND=llm needs DIALOG_LLM_BASE_URL (an OpenAI-compatible /v1 URL)")
    body = {
        "model": settings.dialog_llm_model,
        "messages": messages,
        "stream": True,
        "temperature": 0.2,
        "max_tokens": 160,
    }
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if settings.dialog_llm_api_key:
        headers["Authorization"] = f"Bearer {settings.dialog_llm_api_key}"
    url = settings.dialog_llm_base_url.rstrip("/") + "/chat/completions"
    return urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")


def _deltas(line: bytes) -> tuple[list[str], bool]:
    """Content pieces of one server-sent-events line ('data: {...}'), and whether the stream is done."""
    text = line.decode("utf-8", "replace").strip()
    if not text.startswith("data:"):
        return [], False
    payload = text[5:].strip()
    if payload == "[DONE]":
        return [], True
    choices = json.loads(payload).get("choices", [])
    return [c["delta"]["content"] for c in choices if (c.get("delta") or {}).get("content")], False


def stream_chat(settings: Settings, messages: list[dict]) -> Iterator[str]:
    """Yield the reply's text pieces as the server streams them; DialogError on any failure or timeout."""
    deadline = time.monotonic() + settings.dialog_llm_timeout
    try:
        with urllib.request.urlopen(_request(settings, messages), timeout=settings.dialog_llm_timeout) as response:
            for line in response:
                if time.monotonic() > deadline:
                    message = f"LLM answer took longer than {settings.dialog_llm_timeout:g} s"
                    raise DialogError(message, code="llm_timeout")
                pieces, done = _deltas(line)
                yield from pieces
                if done:
                    return
    except urllib.error.HTTPError as err:
        raise DialogError(f"LLM server answered HTTP {err.code}", code="llm_failed") from err
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as err:
        raise DialogError(f"LLM server failed: {type(err).__name__}", code="llm_failed") from err


def compose(settings: Settings, question: str, passages: list[Passage], history: list[Exchange]) -> str | None:
    """The model's answer from `passages`, or None when it says the passages do not answer."""
    text = "".join(stream_chat(settings, messages_for(question, passages, history))).strip()
    if not text or NO_ANSWER in text:
        return None
    return text
