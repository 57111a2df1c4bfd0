"""voiceapp: the voice assistant of SiteLLM Vertebro (Flask front, Celery pipeline)."""

from __future__ import annotations

from flask import Flask

from .config import Settings, SettingsError

__all__ = ["Settings", "create_app"]


def create_app(settings: Settings | None = None) -> Flask:
    """Build the WSGI app from settings (default: the environment). Only wiring here."""
    from . import metrics
    from .logs import configure_logging
    from .runtime import Runtime
    from .web import admin, api, errors, health, origins, ratelimit, safejson, widget, ws
    from .web.admission import deployment_metrics

    settings = settings or Settings.from_env()
    if not settings.secret_key:
        raise SettingsError("VOICE_SECRET_KEY must be set: it signs session tokens (voiceapp up generates one)")
    configure_logging(settings)
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.audio_max_bytes, JSON_SORT_KEYS=False)
    if settings.proxy_hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # Trust X-Forwarded-* only from the configured proxies: else any client could pick its own address.
        hops = settings.proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=0, x_port=0, x_prefix=0)  # type: ignore[method-assign]  # Flask documents wrapping wsgi_app
    runtime = app.extensions["voiceapp"] = Runtime(settings)
    errors.init_app(app)
    health.init_app(app)
    metrics.init_app(app, deployment_metrics(runtime))
    if settings.voice_enabled:
        safejson.init_app(app)
        origins.init_app(app)
        ratelimit.init_app(app)
        api.init_app(app)
        ws.init_app(app)
        widget.init_app(app)
        admin.init_app(app)
    return app
