"""Version 4: questions the dialog refused (the site owner's unanswered list), kept as long as interactions."""

from __future__ import annotations

from migrations.schema import CollectionSpec, index
from migrations.v001_voice_schema import INTERACTIONS_RETENTION
from voiceapp.config import Settings

VERSION = 4
NAME = "unanswered questions (per project, TTL like interactions)"


def collections(settings: Settings) -> list[CollectionSpec]:
    """Listed per project, newest first; expire with the interactions they came from."""
    return [
        CollectionSpec(
            settings.unanswered_collection,
            (
                index(("project", 1), ("asked_at", -1)),
                index(("asked_at", 1), ttl=INTERACTIONS_RETENTION),
            ),
        )
    ]
