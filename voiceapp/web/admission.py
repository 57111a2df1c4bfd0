"""Admission control shared by every API process through Redis: session slots and queue depth."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import redis

from ..config import Settings
from ..errors import LimitExceeded, VoiceError
from ..queues import all_queues

if TYPE_CHECKING:  # metrics is imported at call time (it imports this module's neighbours)
    from ..metrics import DeploymentMetrics

SLOTS_KEY = "voiceapp:sessions:active"
PROJECT_SLOTS_PREFIX = "voiceapp:sessions:project:"
WS_PROJECT_PREFIX = "voiceapp:ws:project:"
WS_SESSION_PREFIX = "voiceapp:ws:session:"
# A WebSocket's lease: its API process renews it while the socket lives, so a killed process frees it.
WS_LEASE_S = 60

# KEYS: the global set, then the project's set. Expired slots are dropped first, so a crashed client
# never holds a slot past its session timeout. 0 = global limit reached, -1 = the project's quota.
_ACQUIRE_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
  return 1
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then
  return -1
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[2], math.max(1, math.ceil(tonumber(ARGV[2]) - tonumber(ARGV[1]))))
return 1
"""

# KEYS: the session's sockets, then the project's. ARGV: now, lease end, socket id, session limit,
# project limit. -1 = the session holds its maximum, 0 = the project does, 1 = taken.
_WS_ACQUIRE_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return -1
end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return 1
"""


def is_open(settings: Settings, project: str) -> bool:
    """Whether anyone may open sessions of `project` without its key (VOICE_OPEN_PROJECTS)."""
    return project in settings.open_projects


def project_session_quota(settings: Settings, project: str, own: dict | None = None) -> int:
    """Live sessions one project may hold: its own quota or the default, within VOICE_MAX_CONCURRENT_SESSIONS."""
    default = settings.open_project_max_sessions if is_open(settings, project) else settings.project_max_sessions
    return min((own or {}).get("sessions", default), settings.max_concurrent_sessions)


def project_websocket_quota(settings: Settings, project: str, own: dict | None = None) -> int:
    """WebSockets one project may hold open across every API process: its own quota or the default."""
    default = settings.open_project_max_websockets if is_open(settings, project) else settings.project_max_websockets
    return (own or {}).get("websockets", default)


class Busy(VoiceError):
    """A stage's queue is too deep: come back later."""

    code, status = "busy", 503

    def __init__(self, message: str, retry_after: int = 5, code: str | None = None, status: int | None = None):
        super().__init__(message, code, status)
        self.retry_after = retry_after

    def __reduce__(self):
        return (type(self), (self.message, self.retry_after, self.code, self.status))


class SessionSlots:
    """At most VOICE_MAX_CONCURRENT_SESSIONS live sessions across all API processes, and a quota per project."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._redis = client
        self._settings = settings
        self._acquire = client.register_script(_ACQUIRE_LUA)

    def acquire(self, session_id: str, project: str, expires_at: float, own: dict | None = None) -> None:
        """Take a slot until `expires_at` (epoch seconds); LimitExceeded (429) when the global or project cap is hit."""
        limit = self._settings.max_concurrent_sessions
        quota = project_session_quota(self._settings, project, own)
        keys = [SLOTS_KEY, PROJECT_SLOTS_PREFIX + project]
        taken = int(self._acquire(keys=keys, args=[time.time(), expires_at, session_id, limit, quota]))
        if taken == 0:
            raise LimitExceeded(
                f"the assistant is at its limit of {limit} concurrent voice sessions; try again in a minute",
                code="voice_concurrency_limit",
            )
        if taken < 0:
            raise LimitExceeded(
                f"project '{project}' holds its quota of {quota} concurrent voice sessions; end one or try again later",
                code="project_session_quota",
            )

    def touch(self, session_id: str, project: str, expires_at: float) -> None:
        """Slide the slot's expiry with the session's."""
        pipe = self._redis.pipeline()
        pipe.zadd(SLOTS_KEY, {session_id: expires_at}, xx=True)
        pipe.zadd(PROJECT_SLOTS_PREFIX + project, {session_id: expires_at}, xx=True)
        pipe.expireat(PROJECT_SLOTS_PREFIX + project, int(expires_at) + 1)  # every touch sets the latest expiry
        pipe.execute()

    def release(self, session_id: str, project: str) -> None:
        """Give the slot back (session ended)."""
        pipe = self._redis.pipeline()
        pipe.zrem(SLOTS_KEY, session_id)
        pipe.zrem(PROJECT_SLOTS_PREFIX + project, session_id)
        pipe.execute()

    def active(self, project: str | None = None) -> int:
        """Live sessions right now (of one project when given)."""
        key = SLOTS_KEY if project is None else PROJECT_SLOTS_PREFIX + project
        return int(self._redis.zcount(key, time.time(), "+inf"))


class WebSocketSlots:
    """Open WebSockets per session and per project, counted in Redis across every API process."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._redis = client
        self._settings = settings
        self._acquire = client.register_script(_WS_ACQUIRE_LUA)

    @staticmethod
    def _keys(session_id: str, project: str) -> list[str]:
        return [WS_SESSION_PREFIX + session_id, WS_PROJECT_PREFIX + project]

    def acquire(self, socket_id: str, session_id: str, project: str, own: dict | None = None) -> None:
        """Count one socket; LimitExceeded (too_many_connections) when the session or the project is full."""
        now = time.time()
        per_session = self._settings.session_max_websockets
        quota = project_websocket_quota(self._settings, project, own)
        args: list[str | float | int] = [now, now + WS_LEASE_S, socket_id, per_session, quota, WS_LEASE_S * 2]
        taken = int(self._acquire(keys=self._keys(session_id, project), args=args))
        if taken < 0:
            raise LimitExceeded(
                f"this session already has {per_session} open voice connections (VOICE_SESSION_MAX_WEBSOCKETS); "
                "close one first",
                code="too_many_connections",
            )
        if taken == 0:
            raise LimitExceeded(
                f"project '{project}' holds its quota of {quota} open voice connections; retry shortly",
                code="too_many_connections",
            )

    def renew(self, socket_id: str, session_id: str, project: str) -> None:
        """Extend the socket's lease (called while it lives)."""
        until = time.time() + WS_LEASE_S
        pipe = self._redis.pipeline()
        for key in self._keys(session_id, project):
            pipe.zadd(key, {socket_id: until}, xx=True)
            pipe.expire(key, WS_LEASE_S * 2)
        pipe.execute()

    def release(self, socket_id: str, session_id: str, project: str) -> None:
        """Forget the socket (closed)."""
        pipe = self._redis.pipeline()
        for key in self._keys(session_id, project):
            pipe.zrem(key, socket_id)
        pipe.execute()

    def count(self, project: str) -> int:
        """Live sockets of a project."""
        return int(self._redis.zcount(WS_PROJECT_PREFIX + project, time.time(), "+inf"))


def queue_depths(client: redis.Redis, names: tuple[str, ...]) -> dict[str, int]:
    """Waiting messages per Celery queue (the Redis transport keeps each queue as a list)."""
    pipe = client.pipeline()
    for name in names:
        pipe.llen(name)
    return dict(zip(names, (int(n) for n in pipe.execute()), strict=True))


def check_queues(client: redis.Redis, settings: Settings) -> None:
    """Busy (503 + Retry-After) when any stage's queue is deeper than VOICE_QUEUE_MAX_DEPTH."""
    depths = queue_depths(client, all_queues(settings))
    worst = max(depths, key=lambda name: depths[name])
    if depths[worst] > settings.queue_max_depth:
        # About one second of work per queued turn on a single worker: a rough but honest hint.
        retry = max(1, math.ceil(depths[worst] - settings.queue_max_depth))
        raise Busy(f"busy: {depths[worst]} turns are waiting for {worst}; retry in {retry} s", retry_after=retry)


def deployment_metrics(rt) -> DeploymentMetrics:
    """The scrape-time gauges of this deployment (live sessions, queue depth) read from Redis."""
    from ..metrics import DeploymentMetrics

    return DeploymentMetrics(
        lambda: SessionSlots(rt.redis, rt.settings).active(), lambda: queue_depths(rt.redis, all_queues(rt.settings))
    )


class UtteranceRate:
    """New live utterances per session (VOICE_RATE_LIMIT_UTTERANCES) and per project, shared through Redis."""

    def __init__(self, settings: Settings) -> None:
        from limits import parse
        from limits.storage import storage_from_string
        from limits.strategies import MovingWindowRateLimiter

        self._settings = settings
        self._limiter = MovingWindowRateLimiter(storage_from_string(settings.redis_url))
        self._per_session = parse(settings.rate_limit_utterances)
        self._per_project = parse(settings.rate_limit_project)
        self._per_open_project = parse(settings.rate_limit_open_project)

    def hit(self, session_id: str, project: str) -> None:
        """Count one utterance; LimitExceeded (rate_limited) when the session or its project is over its rate."""
        if not self._limiter.hit(self._per_session, "voiceapp-utt", "session", session_id):
            raise LimitExceeded(
                f"too many utterances on this session (VOICE_RATE_LIMIT_UTTERANCES={self._settings.rate_limit_utterances})"
                "; wait a moment",
                code="rate_limited",
            )
        per_project = self._per_open_project if is_open(self._settings, project) else self._per_project
        if not self._limiter.hit(per_project, "voiceapp-utt", "project", project):
            raise LimitExceeded("too many utterances for this project right now; wait a moment", code="rate_limited")


def utterance_rate(rt) -> UtteranceRate:
    """The utterance rate limiter of this runtime (one Redis connection pool, built on first use)."""
    limiter = getattr(rt, "_utterance_rate", None)
    if limiter is None:
        limiter = UtteranceRate(rt.settings)
        rt._utterance_rate = limiter
    return limiter
