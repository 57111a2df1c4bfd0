"""A Celery worker's own /metrics endpoint, so Prometheus scrapes recognition and synthesis where they happen.

Started from tasks/worker.py when WORKER_METRICS_PORT is set (deploy/compose.yaml sets 9100 in every
worker container). Without PROMETHEUS_MULTIPROC_DIR it serves this process's registry, which is the
whole worker with `--pool solo` (the image's default); prefork workers need PROMETHEUS_MULTIPROC_DIR.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

PORT_VARIABLE = "WORKER_METRICS_PORT"
HOST_VARIABLE = "WORKER_METRICS_HOST"
DEFAULT_HOST = "0.0.0.0"  # containers are scraped from another network namespace

_LOGGER = logging.getLogger(__name__)
_started: dict[str, Any] = {}


class WorkerMetricsError(ValueError):
    """WORKER_METRICS_PORT holds something that is not a TCP port."""


def metrics_address(env: Mapping[str, str] | None = None) -> tuple[str, int] | None:
    """(host, port) from WORKER_METRICS_HOST / WORKER_METRICS_PORT, or None when the port is unset."""
    env = os.environ if env is None else env
    raw = (env.get(PORT_VARIABLE) or "").strip()
    if not raw:
        return None
    try:
        port = int(raw)
    except ValueError:
        raise WorkerMetricsError(f"{PORT_VARIABLE}={raw!r} is invalid: expected a TCP port") from None
    if not 0 < port < 65536:
        raise WorkerMetricsError(f"{PORT_VARIABLE}={raw!r} is invalid: expected a TCP port between 1 and 65535")
    return (env.get(HOST_VARIABLE) or DEFAULT_HOST).strip(), port


def _registry(env: Mapping[str, str]) -> CollectorRegistry:
    """The default registry, or one aggregating every process's samples in multiprocess mode."""
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def start_metrics_server(env: Mapping[str, str] | None = None) -> tuple[str, int] | None:
    """Serve /metrics on WORKER_METRICS_PORT once per process; return (host, port), or None when unset."""
    env = os.environ if env is None else env
    address = metrics_address(env)
    if address is None:
        return None
    if "address" in _started:
        return _started["address"]
    host, port = address
    server, _thread = start_http_server(port, addr=host, registry=_registry(env))
    _started.update(address=address, server=server)
    _LOGGER.info("worker metrics on http://%s:%d/metrics", host, port)
    return address


def stop_metrics_server() -> None:
    """Stop the endpoint this process started (tests, clean shutdown)."""
    server = _started.pop("server", None)
    _started.pop("address", None)
    if server is not None:
        server.shutdown()
        server.server_close()


def on_worker_setup(**_kwargs: Any) -> None:
    """celeryd_after_setup handler: start the endpoint when WORKER_METRICS_PORT is set."""
    start_metrics_server()
