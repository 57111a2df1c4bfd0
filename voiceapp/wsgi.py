"""WSGI entry point for gunicorn: `gunicorn voiceapp.wsgi:app` (settings from the environment).

The API process's background work (the retention sweeper) starts here, not in `create_app`: building an app
(a test, a script) starts no thread. The local stack and the container image both serve this module.
"""

from . import create_app
from .storage.retention import start_sweeper

app = create_app()
_runtime = app.extensions["voiceapp"]
if _runtime.settings.voice_enabled:
    start_sweeper(_runtime, _runtime.settings.retention_sweep_interval)
