"""Version 2: the per-project knowledge base used by dialog retrieval."""

from __future__ import annotations

from migrations.schema import CollectionSpec, index
from voiceapp.config import Settings
from voiceapp.storage.mongo import knowledge_meta_collection

VERSION = 2
NAME = "knowledge base (passages + per-project version counter)"


def collections(settings: Settings) -> list[CollectionSpec]:
    """Passages are loaded per project and replaced per (project, source)."""
    return [
        CollectionSpec(
            settings.knowledge_collection,
            (index(("project", 1), ("source", 1), ("position", 1)),),
        ),
        CollectionSpec(knowledge_meta_collection(settings), ()),
    ]
