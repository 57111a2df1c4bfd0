"""The app factory only wires; the API process's entry (voiceapp.wsgi, what gunicorn serves) starts its threads."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from tests.support import REPO
from voiceapp import create_app
from voiceapp.config import Settings

SWEEPER = "voiceapp-retention"


def _sweepers() -> int:
    return sum(1 for t in threading.enumerate() if t.name == SWEEPER)


def test_building_an_app_starts_no_sweeper_thread():
    before = _sweepers()
    app = create_app(Settings.from_env({}, secret_key="s" * 40))
    assert app.extensions["voiceapp"].settings.voice_enabled  # the full API was wired, not a bare app
    assert _sweepers() == before


def test_the_wsgi_entry_starts_one_retention_sweeper():
    probe = f"import threading, voiceapp.wsgi; print(sum(1 for t in threading.enumerate() if t.name == {SWEEPER!r}))"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE", "REDIS", "MONGO"))}
    env["VOICE_SECRET_KEY"] = "s" * 40
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "1", out.stderr[-2000:]
