"""Worker heartbeats in Redis: each worker says which queues it serves, /readyz counts them."""

from __future__ import annotations

import logging
import threading
import time

import redis

PREFIX = "voiceapp:workers"
log = logging.getLogger(__name__)


def beat(client: redis.Redis, hostname: str, queues: set[str], ttl: int = 30) -> None:
    """Mark this worker alive for `ttl` seconds on each of its queues (a sorted set per queue, scored by expiry)."""
    now = time.time()
    pipe = client.pipeline()
    for queue in queues:
        pipe.zremrangebyscore(f"{PREFIX}:{queue}", "-inf", now)
        pipe.zadd(f"{PREFIX}:{queue}", {hostname: now + ttl})
    pipe.execute()


def start_beating(client: redis.Redis, hostname: str, queues: set[str], interval: float = 10.0) -> threading.Event:
    """Beat every `interval` seconds in a daemon thread until the returned event is set."""
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                beat(client, hostname, queues, ttl=int(interval * 3))
            except redis.RedisError as err:  # Redis restarting: the next beat tries again
                log.warning("heartbeat failed: %s", err)
            stop.wait(interval)

    threading.Thread(target=run, name="voiceapp-heartbeat", daemon=True).start()
    return stop


def workers_per_queue(client: redis.Redis, queues: tuple[str, ...]) -> dict[str, int]:
    """How many live workers serve each queue."""
    pipe = client.pipeline()
    now = time.time()
    for queue in queues:
        pipe.zcount(f"{PREFIX}:{queue}", now, "+inf")
    return dict(zip(queues, (int(n) for n in pipe.execute()), strict=True))
