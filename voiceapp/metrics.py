"""The seed's Prometheus metrics, defined once and fed from the API and the workers.

With PROMETHEUS_MULTIPROC_DIR set (the local stack sets it), every process writes its samples
there and the API's /metrics aggregates them, workers included.
"""
from __future__ import annotations

import os

from flask import Flask
from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)

SESSIONS_ACTIVE = Gauge("voice_sessions_active", "Current active session count", multiprocess_mode="livesum")
SESSIONS_CREATED = Counter("voice_sessions_created_total", "Total sessions created")
INTERACTIONS = Counter("voice_interactions_total", "Total interactions logged")
CACHE_HITS = Counter("voice_audio_cache_hits_total", "Audio cache hits")
CACHE_MISSES = Counter("voice_audio_cache_misses_total", "Audio cache misses")
SYNTHESIS_SECONDS = Histogram("voice_synthesis_duration_seconds", "TTS generation time", ["provider"],
                              buckets=_LATENCY_BUCKETS)
RECOGNITION_SECONDS = Histogram("voice_recognition_duration_seconds", "STT processing time", ["engine", "model"],
                                buckets=_LATENCY_BUCKETS)


def observe_recognition(engine: str, model: str, seconds: float) -> None:
    """Record one recognition."""
    RECOGNITION_SECONDS.labels(engine=engine, model=model).observe(seconds)


def observe_synthesis(provider: str, seconds: float) -> None:
    """Record one synthesis."""
    SYNTHESIS_SECONDS.labels(provider=provider).observe(seconds)


def init_app(app: Flask) -> None:
    """Expose /metrics (request metrics grouped by endpoint: session ids never become labels)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_flask_exporter.multiprocess import MultiprocessInternalPrometheusMetrics

        metrics = MultiprocessInternalPrometheusMetrics(app, group_by="endpoint")
    else:
        from prometheus_flask_exporter import PrometheusMetrics

        metrics = PrometheusMetrics(app, group_by="endpoint")
    app.extensions["voiceapp_metrics"] = metrics
