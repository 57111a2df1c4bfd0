"""A turn over the HTTP API as a client makes it: post the audio (or text), then long-poll until it ends."""

from __future__ import annotations

import time
from typing import Any

import requests

from voiceapp.turns import is_terminal


class TurnRequestError(AssertionError):
    """The API refused or failed a turn request (the message has the status and body); tests report it as such."""


def auth(session: dict[str, Any]) -> dict[str, str]:
    """The Authorization header of a session's token."""
    return {"Authorization": f"Bearer {session['token']}"}


def turns_url(base_url: str, session: dict[str, Any]) -> str:
    """The session's turns collection URL."""
    return f"{base_url}/api/v1/voice/sessions/{session['session_id']}/turns"


def post_turn(
    base_url: str, session: dict[str, Any], audio: bytes | None = None, *, text: str | None = None, **headers: str
) -> str:
    """Post a turn (audio bytes, or JSON {"text"}) and return its id; anything but 202 raises TurnRequestError."""
    url, sent = turns_url(base_url, session), {**auth(session), **headers}
    if text is not None:
        response = requests.post(url, json={"text": text}, headers=sent, timeout=30)
    else:
        response = requests.post(url, data=audio, headers=sent, timeout=30)
    if response.status_code != 202:
        raise TurnRequestError(f"POST {url} -> {response.status_code}: {response.text[:500]}")
    return response.json()["turn_id"]


def wait_turn(base_url: str, session: dict[str, Any], turn_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Long-poll the turn (?wait=) until it ends or `timeout` passes; return its last JSON either way."""
    url = f"{turns_url(base_url, session)}/{turn_id}"
    deadline = time.monotonic() + timeout
    while True:
        wait = max(0.0, min(20.0, deadline - time.monotonic()))  # one hold stays under VOICE_TURN_WAIT_MAX (30 s)
        response = requests.get(url, params={"wait": wait}, headers=auth(session), timeout=wait + 30)
        if response.status_code != 200:
            raise TurnRequestError(f"GET {url} -> {response.status_code}: {response.text[:500]}")
        turn = response.json()
        if is_terminal(turn.get("status")) or time.monotonic() >= deadline:
            return turn


def ask(base_url: str, session: dict[str, Any], audio: bytes, timeout: float = 60.0) -> dict[str, Any]:
    """Post `audio` as a turn and return the finished turn's JSON (or its state when `timeout` ran out)."""
    return wait_turn(base_url, session, post_turn(base_url, session, audio), timeout)
