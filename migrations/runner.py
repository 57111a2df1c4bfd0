"""Apply the numbered versions idempotently and verify the result."""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import ModuleType
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import CollectionInvalid, OperationFailure

from migrations.schema import CollectionSpec, IndexSpec, describe_key, normalize_key
from voiceapp.config import Settings
from voiceapp.errors import VoiceError

MIGRATIONS_COLLECTION = "voice_migrations"
_VERSION_MODULE = re.compile(r"^v(\d{3})_\w+$")


class MigrationError(VoiceError):
    code, status = "migration_failed", 500


@dataclass
class MigrationReport:
    """What one migrate() run created, recreated or found already in place."""

    created_collections: list[str] = field(default_factory=list)
    existing_collections: list[str] = field(default_factory=list)
    created_indexes: list[str] = field(default_factory=list)
    recreated_indexes: list[str] = field(default_factory=list)
    existing_indexes: list[str] = field(default_factory=list)
    extra_indexes: list[str] = field(default_factory=list)
    applied_versions: list[int] = field(default_factory=list)
    already_applied: list[int] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True when this run changed the database schema."""
        return bool(self.created_collections or self.created_indexes or self.recreated_indexes)

    def summary(self) -> str:
        """Human-readable lines, one per category that is not empty."""
        parts = [
            ("created collections", self.created_collections),
            ("existing collections", self.existing_collections),
            ("created indexes", self.created_indexes),
            ("recreated indexes", self.recreated_indexes),
            ("existing indexes", self.existing_indexes),
            ("extra indexes (left alone)", self.extra_indexes),
            ("applied versions", [f"{v:03d}" for v in self.applied_versions]),
            ("already applied", [f"{v:03d}" for v in self.already_applied]),
        ]
        return "\n".join(f"{label}: {', '.join(items)}" for label, items in parts if items) or "nothing to do"

    __str__ = summary


def load_versions() -> list[ModuleType]:
    """Every vNNN_*.py module of this package, in version order."""
    import migrations

    modules = []
    for info in pkgutil.iter_modules(migrations.__path__):
        if _VERSION_MODULE.match(info.name):
            modules.append(importlib.import_module(f"migrations.{info.name}"))
    return sorted(modules, key=lambda module: module.VERSION)


def wanted(settings: Settings) -> list[tuple[ModuleType, list[CollectionSpec]]]:
    """Each version with the collections it declares for these settings."""
    return [(version, version.collections(settings)) for version in load_versions()]


def _ensure_collection(db: Database, name: str, existing: set[str], report: MigrationReport) -> None:
    if name in existing:
        report.existing_collections.append(name)
        return
    try:
        db.create_collection(name)
        report.created_collections.append(name)
    except CollectionInvalid:
        # Another process created it between our listing and now.
        report.existing_collections.append(name)
    existing.add(name)


def _ensure_index(
    collection: Collection, spec: IndexSpec, current: list[MutableMapping[str, Any]], report: MigrationReport
) -> None:
    label = f"{collection.name} {spec.describe()}"
    same_key = [info for info in current if normalize_key(info["key"]) == spec.key]
    if any(IndexSpec.from_server(info) == spec for info in same_key):
        report.existing_indexes.append(label)
        return
    # No collMod (the emulator lacks it): an index whose options differ is dropped and recreated.
    for info in same_key:
        try:
            collection.drop_index(info["name"])
        except OperationFailure as err:
            if err.code != 27:  # IndexNotFound: a concurrent run dropped it first
                raise MigrationError(f"cannot drop index {label} to recreate it: {err}") from err
    try:
        collection.create_index(list(spec.key), **spec.options())
    except OperationFailure as err:
        raise MigrationError(f"cannot create index {label}: {err}") from err
    (report.recreated_indexes if same_key else report.created_indexes).append(label)


def _ensure_indexes(db: Database, spec: CollectionSpec, report: MigrationReport) -> None:
    collection = db[spec.name]
    current = [info for info in collection.list_indexes() if info["name"] != "_id_"]
    for index_spec in spec.indexes:
        _ensure_index(collection, index_spec, current, report)
    declared = {index_spec.key for index_spec in spec.indexes}
    for info in current:
        if normalize_key(info["key"]) not in declared:
            report.extra_indexes.append(f"{spec.name} {describe_key(normalize_key(info['key']))}")


def _record(db: Database, version: ModuleType, report: MigrationReport) -> None:
    now = datetime.now(timezone.utc)
    result = db[MIGRATIONS_COLLECTION].update_one(
        {"_id": version.VERSION},
        {"$setOnInsert": {"name": version.NAME, "applied_at": now}, "$set": {"last_run_at": now}},
        upsert=True,
    )
    (report.applied_versions if result.upserted_id is not None else report.already_applied).append(version.VERSION)


def migrate(db: Database, settings: Settings) -> MigrationReport:
    """Bring `db` to the declared schema; safe to run any number of times."""
    report = MigrationReport()
    existing = set(db.list_collection_names())
    # Every version is re-applied: settings (names, cache TTL) may have changed since last run.
    for version, collections in wanted(settings):
        for spec in collections:
            _ensure_collection(db, spec.name, existing, report)
            _ensure_indexes(db, spec, report)
        _record(db, version, report)
    return report


def _index_problems(db: Database, spec: CollectionSpec) -> list[str]:
    current = [IndexSpec.from_server(info) for info in db[spec.name].list_indexes() if info["name"] != "_id_"]
    problems = []
    for index_spec in spec.indexes:
        if index_spec in current:
            continue
        same_key = [found for found in current if found.key == index_spec.key]
        if same_key:
            problems.append(
                f"{spec.name}: index {describe_key(index_spec.key)} is '{same_key[0].describe()}', "
                f"expected '{index_spec.describe()}'"
            )
        else:
            problems.append(f"{spec.name}: index {index_spec.describe()} is missing")
    return problems


def verify(db: Database, settings: Settings) -> list[str]:
    """Human-readable problems with the schema; an empty list means all is in place."""
    problems: list[str] = []
    names = set(db.list_collection_names())
    applied = {doc["_id"] for doc in db[MIGRATIONS_COLLECTION].find({}, {"_id": 1})}
    for version, collections in wanted(settings):
        for spec in collections:
            if spec.name not in names:
                problems.append(f"collection {spec.name} is missing")
                continue
            problems.extend(_index_problems(db, spec))
        if version.VERSION not in applied:
            problems.append(
                f"migration {version.VERSION:03d} ({version.NAME}) is not recorded in {MIGRATIONS_COLLECTION}"
            )
    return problems
