"""Helpers shared by the tests: test data, sessions, word error rate."""

from __future__ import annotations

from pathlib import Path

import requests

from voiceapp.stt.wer import wer as word_error_rate  # noqa: F401  (re-exported for tests)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"

JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


def shared_file(name: str) -> Path:
    """A real recording kept in tests/data (see its README for sources and transcripts)."""
    path = DATA / name
    assert path.exists(), f"missing test data {path}"
    return path


def new_session(base_url: str, project: str, key: str | None = None, **fields) -> dict:
    """Create a session over HTTP (with the project's key unless it is open) and return its JSON."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = requests.post(
        f"{base_url}/api/v1/voice/sessions", json={"project": project, **fields}, headers=headers, timeout=10
    )
    assert response.status_code == 201, response.text
    return response.json()
