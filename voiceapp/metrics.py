"""The seed's Prometheus metrics, defined once and fed from the API and the workers.

With PROMETHEUS_MULTIPROC_DIR set (the local stack sets it), every process writes its samples
there and the API's /metrics aggregates them, workers included.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from flask import Flask
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)

SESSIONS_CREATED = Counter("voice_sessions_created_total", "Total sessions created")
INTERACTIONS = Counter("voice_interactions_total", "Total interactions logged")
CACHE_HITS = Counter("voice_audio_cache_hits_total", "Audio cache hits")
CACHE_MISSES = Counter("voice_audio_cache_misses_total", "Audio cache misses")
SYNTHESIS_SECONDS = Histogram(
    "voice_synthesis_duration_seconds", "TTS generation time", ["provider"], buckets=_LATENCY_BUCKETS
)
# TTS cost and fallbacks (issue 4): "mostrecent" so the API's aggregated /metrics shows the last value written.
TTS_COST_TODAY = Gauge(
    "voice_tts_cost_usd_today", "TTS cost of the current UTC day in USD", ["project"], multiprocess_mode="mostrecent"
)
COST_ALERT_ACTIVE = Gauge(
    "voice_cost_alert_active",
    "1 while today's TTS cost is past VOICE_COST_ALERT_THRESHOLD",
    multiprocess_mode="mostrecent",
)
TTS_FALLBACKS = Counter("voice_tts_fallbacks_total", "Syntheses answered by a fallback provider", ["from", "to"])
# Speculative reply (issue 15): whether a turn's first audio came from the reply prepared before its end.
PREPARED_REPLIES = Counter(
    "voice_prepared_replies_total", "Turns with a reply prepared at a pause, by outcome (used, dropped)", ["outcome"]
)
RECOGNITION_SECONDS = Histogram(
    "voice_recognition_duration_seconds", "STT processing time", ["engine", "model"], buckets=_LATENCY_BUCKETS
)


def observe_recognition(engine: str, model: str, seconds: float) -> None:
    """Record one recognition."""
    RECOGNITION_SECONDS.labels(engine=engine, model=model).observe(seconds)


def observe_synthesis(provider: str, seconds: float) -> None:
    """Record one synthesis."""
    SYNTHESIS_SECONDS.labels(provider=provider).observe(seconds)


PROCESS_METRICS = (
    SESSIONS_CREATED,
    INTERACTIONS,
    CACHE_HITS,
    CACHE_MISSES,
    SYNTHESIS_SECONDS,
    RECOGNITION_SECONDS,
    TTS_COST_TODAY,
    COST_ALERT_ACTIVE,
    TTS_FALLBACKS,
    PREPARED_REPLIES,
)


class _ProcessMetrics(Collector):
    """Every voiceapp metric of this process, for an app registry of its own (single-process mode)."""

    def collect(self) -> Iterator[Metric]:
        for metric in PROCESS_METRICS:
            yield from metric.collect()


class DeploymentMetrics(Collector):
    """Gauges read at scrape time from Redis, true across all processes: live sessions, queue depth."""

    def __init__(self, sessions_active: Callable[[], int], queue_depths: Callable[[], dict[str, int]]) -> None:
        self._sessions_active = sessions_active
        self._queue_depths = queue_depths

    def collect(self) -> Iterator[Metric]:
        try:
            active, depths = self._sessions_active(), self._queue_depths()
        except Exception:  # noqa: BLE001  (Redis down: report nothing rather than fail the whole scrape)
            return
        yield GaugeMetricFamily("voice_sessions_active", "Current active session count", value=active)
        family = GaugeMetricFamily("voice_queue_depth", "Turns waiting per stage queue", labels=["queue"])
        for queue, depth in depths.items():
            family.add_metric([queue], depth)
        yield family


def init_app(app: Flask, deployment: Collector | None = None) -> None:
    """Request metrics (grouped by endpoint: session ids never become labels) and GET /metrics."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from prometheus_flask_exporter import PrometheusMetrics

    multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    registry = CollectorRegistry()
    if not multiprocess:
        registry.register(_ProcessMetrics())
        if deployment is not None:
            registry.register(deployment)
    app.extensions["voiceapp_metrics"] = PrometheusMetrics(app, path=None, group_by="endpoint", registry=registry)

    def scrape_registry() -> CollectorRegistry:
        if not multiprocess:
            return registry
        # Every process (API workers, Celery workers) writes samples to the shared directory.
        from prometheus_client.multiprocess import MultiProcessCollector

        merged = CollectorRegistry()
        MultiProcessCollector(merged)
        if deployment is not None:
            merged.register(deployment)
        return merged

    @app.get("/metrics")
    def prometheus_metrics():
        """Prometheus text format."""
        return generate_latest(scrape_registry()), 200, {"Content-Type": CONTENT_TYPE_LATEST}
