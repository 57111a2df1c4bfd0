"""Version 1: the seed's four voice collections with exactly the seed's indexes."""

from __future__ import annotations

from migrations.schema import CollectionSpec, index
from voiceapp.config import Settings

VERSION = 1
NAME = "voice schema (sessions, interactions, audio cache, analytics)"

INTERACTIONS_RETENTION = 30 * 24 * 3600


def collections(settings: Settings) -> list[CollectionSpec]:
    """What this version needs, from the (overridable) collection names and cache TTL."""
    return [
        CollectionSpec(
            settings.sessions_collection,
            (
                index(("expires_at", 1), ttl=0),
                index(("session_id", 1), unique=True),
                index(("project", 1), ("created_at", 1)),
            ),
        ),
        CollectionSpec(
            settings.interactions_collection,
            (
                index(("session_id", 1), ("timestamp", 1)),
                index(("project", 1), ("timestamp", 1)),
                index(("timestamp", 1), ttl=INTERACTIONS_RETENTION),
            ),
        ),
        CollectionSpec(
            settings.audio_cache_collection,
            (
                index(("accessed_at", 1), ttl=settings.cache_ttl),
                index(("text_hash", 1), ("voice", 1), ("language", 1)),
            ),
        ),
        # Placeholder, as in the seed: no indexes yet.
        CollectionSpec(settings.analytics_collection, ()),
    ]
