"""Per-process handles built from Settings: Redis, MongoDB, the event bus, the Celery client."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

import redis

from .config import Settings
from .events import EventBus

if TYPE_CHECKING:
    from celery import Celery
    from pymongo.database import Database


class Runtime:
    """Lazily opened connections shared by the API and the workers of one process."""

    def __init__(self, settings: Settings, celery: Celery | None = None) -> None:
        self.settings = settings
        self._celery = celery

    @cached_property
    def redis(self) -> redis.Redis:
        """Redis client (decoded replies off: event payloads stay bytes)."""
        return redis.Redis.from_url(
            self.settings.redis_url,
            socket_timeout=5,
            socket_connect_timeout=3,
            health_check_interval=15,
            retry_on_timeout=True,
        )

    @cached_property
    def db(self) -> Database:
        """The voiceapp MongoDB database."""
        from .storage.mongo import get_db

        return get_db(self.settings)

    @cached_property
    def events(self) -> EventBus:
        """Publisher of session events; kept as long as a session lives."""
        return EventBus(self.redis, retention_s=self.settings.session_timeout)

    @property
    def celery(self) -> Celery:
        """The Celery app used to enqueue turns."""
        if self._celery is None:
            from .broker import create_celery

            self._celery = create_celery(self.settings)
        return self._celery
