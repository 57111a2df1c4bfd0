"""Admission control shared by every API process through Redis: session slots and queue depth."""

from __future__ import annotations

import math
import time

import redis

from ..config import Settings
from ..errors import LimitExceeded, VoiceError
from ..queues import all_queues

SLOTS_KEY = "voiceapp:sessions:active"

# Expired slots are dropped first, so a crashed client never holds a slot past its session timeout.
_ACQUIRE_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  return 1
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
return 1
"""


class Busy(VoiceError):
    """A stage's queue is too deep: come back later."""

    code, status = "busy", 503

    def __init__(self, message: str, retry_after: int = 5, code: str | None = None, status: int | None = None):
        super().__init__(message, code, status)
        self.retry_after = retry_after

    def __reduce__(self):
        return (type(self), (self.message, self.retry_after, self.code, self.status))


class SessionSlots:
    """At most VOICE_MAX_CONCURRENT_SESSIONS live sessions across all API processes."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._redis = client
        self._settings = settings
        self._acquire = client.register_script(_ACQUIRE_LUA)

    def acquire(self, session_id: str, expires_at: float) -> None:
        """Take a slot until `expires_at` (epoch seconds); LimitExceeded (429) when all are taken."""
        limit = self._settings.max_concurrent_sessions
        if not self._acquire(keys=[SLOTS_KEY], args=[time.time(), expires_at, session_id, limit]):
            raise LimitExceeded(
                f"the assistant is at its limit of {limit} concurrent voice sessions; try again in a minute",
                code="voice_concurrency_limit",
            )

    def touch(self, session_id: str, expires_at: float) -> None:
        """Slide the slot's expiry with the session's."""
        self._redis.zadd(SLOTS_KEY, {session_id: expires_at}, xx=True)

    def release(self, session_id: str) -> None:
        """Give the slot back (session ended)."""
        self._redis.zrem(SLOTS_KEY, session_id)

    def active(self) -> int:
        """Live sessions right now."""
        return int(self._redis.zcount(SLOTS_KEY, time.time(), "+inf"))


def queue_depths(client: redis.Redis, names: tuple[str, ...]) -> dict[str, int]:
    """Waiting messages per Celery queue (the Redis transport keeps each queue as a list)."""
    pipe = client.pipeline()
    for name in names:
        pipe.llen(name)
    return dict(zip(names, (int(n) for n in pipe.execute())))


def check_queues(client: redis.Redis, settings: Settings) -> None:
    """Busy (503 + Retry-After) when any stage's queue is deeper than VOICE_QUEUE_MAX_DEPTH."""
    depths = queue_depths(client, all_queues(settings))
    worst = max(depths, key=depths.get)
    if depths[worst] > settings.queue_max_depth:
        # About one second of work per queued turn on a single worker: a rough but honest hint.
        retry = max(1, math.ceil(depths[worst] - settings.queue_max_depth))
        raise Busy(f"busy: {depths[worst]} turns are waiting for {worst}; retry in {retry} s", retry_after=retry)


def deployment_metrics(rt) -> "DeploymentMetrics":
    """The scrape-time gauges of this deployment (live sessions, queue depth) read from Redis."""
    from ..metrics import DeploymentMetrics

    return DeploymentMetrics(
        lambda: SessionSlots(rt.redis, rt.settings).active(), lambda: queue_depths(rt.redis, all_queues(rt.settings))
    )
