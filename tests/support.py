"""Helpers shared by the tests: test data, sessions, word error rate."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from voiceapp.config import Settings
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


@contextmanager
def fresh_database(mongo_uri: str, **env: str) -> Iterator[Settings]:
    """Settings (from `env`) on a new, migrated database of the wire server at `mongo_uri`, dropped afterwards."""
    from migrations import migrate
    from voiceapp.storage.mongo import get_client, get_db

    settings = Settings.from_env(env, mongo_uri=mongo_uri, mongo_db=f"t_{uuid.uuid4().hex[:12]}")
    migrate(get_db(settings), settings)
    try:
        yield settings
    finally:
        get_client(settings).drop_database(settings.mongo_db)


def piper_take(settings: Settings, text: str):
    """`text` spoken by the local Piper voice, the same take in every run and on every xdist worker.

    Piper draws noise per synthesis from its ONNX session: a session opened right after seeding onnxruntime
    speaks one fixed take (unseeded, a rare take of "Saturday" was heard as "setter day" and failed CI).
    """
    import onnxruntime

    from voiceapp.tts.piper import PiperProvider, voice_files

    onnxruntime.set_seed(0)
    return PiperProvider(*voice_files(settings), threads=1).synthesize(text)
