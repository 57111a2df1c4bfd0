"""WSGI entry point for gunicorn: `gunicorn voiceapp.wsgi:app` (settings from the environment)."""

from . import create_app

app = create_app()
