"""Helpers shared by the tests: test data, sessions, word error rate."""
from __future__ import annotations

import os
import re
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VOICEAPP_SHARED_DIR", REPO.parent / "shared"))

JFK_TEXT = ("And so my fellow Americans, ask not what your country can do for you, "
            "ask what you can do for your country.")


def shared_file(name: str) -> Path:
    """A file of the shared test data (real recordings)."""
    path = SHARED / "data" / name
    assert path.exists(), f"missing shared test data {path} (set VOICEAPP_SHARED_DIR)"
    return path


def new_session(base_url: str, project: str, **fields) -> dict:
    """Create a session over HTTP and return its JSON."""
    response = requests.post(f"{base_url}/api/v1/voice/sessions", json={"project": project, **fields}, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def _words(text: str) -> list[str]:
    text = text.lower().replace("'s ", " is ").replace("n't", " not")
    return re.findall(r"[a-z0-9]+", text)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance / reference length, ignoring case and punctuation."""
    ref, hyp = _words(reference), _words(hypothesis or "")
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)] / max(1, len(ref))
