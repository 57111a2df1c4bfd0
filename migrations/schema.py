"""Declarative pieces the numbered versions are made of: a collection and its indexes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Key = tuple[tuple[str, Any], ...]


def normalize_key(key: Any) -> Key:
    """A key spec as ((field, direction), ...) with numeric directions as int."""
    items = key.items() if isinstance(key, Mapping) else key
    out = []
    for name, direction in items:
        if isinstance(direction, (int, float)) and not isinstance(direction, bool):
            direction = int(direction)
        out.append((str(name), direction))
    return tuple(out)


def describe_key(key: Key) -> str:
    """'{a: 1, b: -1}', the way people read index keys."""
    return "{" + ", ".join(f"{name}: {direction}" for name, direction in key) + "}"


@dataclass(frozen=True)
class IndexSpec:
    """One index, compared by key spec and options (never by server-side name)."""

    key: Key
    unique: bool = False
    expire_after_seconds: int | None = None

    @classmethod
    def from_server(cls, info: Mapping[str, Any]) -> IndexSpec:
        """The spec of an index as list_indexes() reports it."""
        ttl = info.get("expireAfterSeconds")
        return cls(
            key=normalize_key(info["key"]),
            unique=bool(info.get("unique", False)),
            expire_after_seconds=None if ttl is None else int(ttl),
        )

    def options(self) -> dict[str, Any]:
        """Keyword options for create_index()."""
        opts: dict[str, Any] = {}
        if self.unique:
            opts["unique"] = True
        if self.expire_after_seconds is not None:
            opts["expireAfterSeconds"] = self.expire_after_seconds
        return opts

    def describe(self) -> str:
        """Key plus options, e.g. '{expires_at: 1} TTL 0 s'."""
        text = describe_key(self.key)
        if self.unique:
            text += " unique"
        if self.expire_after_seconds is not None:
            text += f" TTL {self.expire_after_seconds} s"
        return text


@dataclass(frozen=True)
class CollectionSpec:
    """A collection that must exist, with the indexes it must have (besides _id)."""

    name: str
    indexes: tuple[IndexSpec, ...] = field(default_factory=tuple)


def index(*key: tuple[str, Any], unique: bool = False, ttl: int | None = None) -> IndexSpec:
    """Shorthand: index(("a", 1), ("b", -1), unique=True)."""
    return IndexSpec(key=normalize_key(key), unique=unique, expire_after_seconds=ttl)
