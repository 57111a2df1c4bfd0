"""The site owner's console at /admin/: conversations, unanswered questions, knowledge, costs and speed."""

from __future__ import annotations

from flask import Flask

from .views import bp


def init_app(app: Flask) -> None:
    """Register the console blueprint (templates and static files ship inside the package)."""
    app.register_blueprint(bp)
