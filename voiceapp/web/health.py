"""Liveness (/healthz) and readiness (/readyz: Redis, MongoDB, a live worker on every stage queue)."""

from __future__ import annotations

from flask import Blueprint, Flask, current_app, jsonify

from ..heartbeats import workers_per_queue
from ..queues import STAGE_QUEUES, all_queues

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process serves requests."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """Redis and MongoDB answer and every stage queue has a live worker."""
    rt = current_app.extensions["voiceapp"]
    checks: dict[str, str] = {}
    try:
        rt.redis.ping()
        checks["redis"] = "ok"
    except Exception as err:  # noqa: BLE001  (any failure means "not ready", reported by type only)
        checks["redis"] = f"down: {type(err).__name__}"
    try:
        rt.db.command("ping")
        checks["mongo"] = "ok"
    except Exception as err:  # noqa: BLE001  (as above)
        checks["mongo"] = f"down: {type(err).__name__}"
    if checks["redis"] == "ok":
        counts = workers_per_queue(rt.redis, all_queues(rt.settings))
        if rt.settings.stt_gpu_queue:  # CPU or GPU workers can serve recognition
            counts["stt"] += counts.pop(rt.settings.stt_gpu_queue)
        for queue in STAGE_QUEUES:
            checks[f"workers:{queue}"] = "ok" if counts[queue] else "down: no live worker"
    ready = all(v == "ok" for v in checks.values())
    return jsonify({"status": "ready" if ready else "not_ready", "checks": checks}), 200 if ready else 503


def init_app(app: Flask) -> None:
    """Mount the health endpoints (always on, even with VOICE_ENABLED=false)."""
    app.register_blueprint(bp)
