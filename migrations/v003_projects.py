"""Version 3: projects (API key hashes, allowed origins), looked up by project name."""

from __future__ import annotations

from migrations.schema import CollectionSpec, index
from voiceapp.config import Settings

VERSION = 3
NAME = "projects (one document per project)"


def collections(settings: Settings) -> list[CollectionSpec]:
    """One document per project: the name is unique."""
    return [CollectionSpec(settings.projects_collection, (index(("project", 1), unique=True),))]
