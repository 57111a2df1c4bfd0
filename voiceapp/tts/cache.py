"""Synthesized audio cache: GridFS files (bucket voice_audio) indexed by a cache collection.

An entry is keyed by text hash + voice + language + provider + format. GridFS files never carry a
TTL (MongoDB would orphan their chunks): entries expire by `accessed_at` (VOICE_CACHE_TTL), reads
filter by that date, and `prune()` deletes expired entries together with their files.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import PyMongoError

from voiceapp.config import Settings
from voiceapp.models import Synthesis
from voiceapp.storage.audio import REPLIES_BUCKET, delete_audio, put_audio

log = logging.getLogger(__name__)

# Files younger than this may belong to an entry being written right now: prune leaves them alone.
ORPHAN_GRACE = timedelta(minutes=5)
PRUNE_INTERVAL = 600.0
_last_prune = time.monotonic()
# Counting the cache's bytes is an aggregate over every entry: run before each new sentence's audio was sent, it
# grew with the cache. Each process counts at most this often per database and adds what it stores meanwhile,
# so the cap holds within what other processes store in that time.
CAP_RECOUNT_S = 10.0
_sizes: dict[str, tuple[float, int]] = {}  # database name -> (when counted, bytes)


@dataclass(frozen=True)
class CacheKey:
    """What makes two syntheses interchangeable."""

    text_hash: str
    voice: str
    language: str
    provider: str
    format: str

    def query(self) -> dict:
        """The entry filter."""
        return {
            "text_hash": self.text_hash,
            "voice": self.voice,
            "language": self.language,
            "provider": self.provider,
            "format": self.format,
        }


@dataclass(frozen=True)
class CacheEntry:
    """A cached synthesis: where its audio is and what it is."""

    audio_id: str
    mime_type: str
    voice: str
    provider: str
    bytes: int
    duration: float | None = None
    sample_rate: int | None = None


def text_hash(text: str) -> str:
    """SHA-256 of the text as spoken: Unicode-normalised, whitespace collapsed (case kept: it can change prosody)."""
    normal = re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()
    return hashlib.sha256(normal.encode("utf-8")).hexdigest()


def make_key(text: str, *, voice: str, language: str | None, provider: str, fmt: str) -> CacheKey:
    """The key of `text` spoken by `provider` in `voice`/`language`/`fmt`."""
    return CacheKey(text_hash(text), voice or "", (language or "").lower(), provider, fmt)


def _entries(db: Database, settings: Settings) -> Collection:
    return db[settings.audio_cache_collection]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _fresh_after(settings: Settings, now: datetime) -> datetime:
    return now - timedelta(seconds=settings.cache_ttl)


def lookup(db: Database, settings: Settings, key: CacheKey, *, touch: bool = True) -> CacheEntry | None:
    """The live entry for `key`, its `accessed_at` touched (a hit); None on a miss (or when caching is off).

    `touch` False only looks (a reply prepared ahead of its turn is not a hit).
    """
    if not settings.cache_audio:
        return None
    now = _now()
    live = {**key.query(), "accessed_at": {"$gt": _fresh_after(settings, now)}}
    if touch:
        doc = _entries(db, settings).find_one_and_update(
            live, {"$set": {"accessed_at": now}, "$inc": {"hits": 1}}, return_document=ReturnDocument.AFTER
        )
    else:
        doc = _entries(db, settings).find_one(live)
    if doc is None:
        return None
    if db[f"{REPLIES_BUCKET}.files"].find_one({"_id": ObjectId(doc["audio_id"])}, {"_id": 1}) is None:
        # The file went (deleted by hand or by a half-finished prune): drop the entry, synthesize again.
        _entries(db, settings).delete_one({"_id": doc["_id"]})
        return None
    return _entry(doc)


def _entry(doc: dict) -> CacheEntry:
    return CacheEntry(
        audio_id=doc["audio_id"],
        mime_type=doc["mime_type"],
        voice=doc["voice"],
        provider=doc["provider"],
        bytes=int(doc.get("bytes") or 0),
        duration=doc.get("duration"),
        sample_rate=doc.get("sample_rate"),
    )


def store(
    db: Database,
    settings: Settings,
    key: CacheKey,
    synthesis: Synthesis,
    *,
    session_id: str = "",
    audio_id: str | None = None,
) -> CacheEntry:
    """Save the audio in GridFS (under `audio_id` when given) and index it under `key`; keep the cache capped."""
    now = _now()
    meta = {
        "cache": True,
        "session_id": session_id,
        "provider": synthesis.provider,
        "voice": synthesis.voice,
        "text_hash": key.text_hash,
        "format": key.format,
    }
    audio_id = put_audio(
        db,
        synthesis.audio,
        bucket=REPLIES_BUCKET,
        filename=f"tts-{key.text_hash[:16]}",
        content_type=synthesis.mime_type,
        metadata=meta,
        audio_id=audio_id,
    )
    doc = {
        **key.query(),
        "audio_id": audio_id,
        "bytes": len(synthesis.audio),
        "mime_type": synthesis.mime_type,
        "duration": synthesis.duration,
        "sample_rate": synthesis.sample_rate,
        "hits": 0,
        "created_at": now,
        "accessed_at": now,
    }
    _entries(db, settings).insert_one(doc)
    if not _maybe_prune(db, settings) and _over_cap(db, settings, len(synthesis.audio)):
        enforce_cap(db, settings)
        _sizes.pop(db.name, None)  # recount after evicting
    return _entry(doc)


def _over_cap(db: Database, settings: Settings, added: int) -> bool:
    """Whether the cache may be over VOICE_CACHE_MAX_BYTES now that `added` bytes came in (see CAP_RECOUNT_S)."""
    if not settings.cache_max_bytes:
        return False
    now = time.monotonic()
    counted_at, size = _sizes.get(db.name, (-CAP_RECOUNT_S, 0))
    if now - counted_at >= CAP_RECOUNT_S:
        counted_at, size = now, total_bytes(db, settings)
    else:
        size += added
    _sizes[db.name] = (counted_at, size)
    return size > settings.cache_max_bytes


def _maybe_prune(db: Database, settings: Settings) -> bool:
    """Prune at most every PRUNE_INTERVAL per process: TTL-deleted entries leave files only prune removes."""
    global _last_prune
    now = time.monotonic()
    if now - _last_prune < PRUNE_INTERVAL:
        return False
    _last_prune = now
    try:
        prune(db, settings)
    except PyMongoError as err:  # housekeeping must not fail a reply
        log.warning("audio cache prune failed: %s", err)
        return False
    return True


def remove(db: Database, settings: Settings, query: dict) -> int:
    """Delete the entries matching `query` and their GridFS files; returns how many entries went."""
    removed = 0
    for doc in list(_entries(db, settings).find(query, {"_id": 1, "audio_id": 1})):
        # File first: an entry without its file is detected on lookup, a file without entry only by prune.
        delete_audio(db, doc["audio_id"], bucket=REPLIES_BUCKET)
        removed += _entries(db, settings).delete_one({"_id": doc["_id"]}).deleted_count
    return removed


def total_bytes(db: Database, settings: Settings) -> int:
    """Bytes of audio the cache holds."""
    rows = list(_entries(db, settings).aggregate([{"$group": {"_id": None, "bytes": {"$sum": "$bytes"}}}]))
    return int(rows[0]["bytes"]) if rows else 0


def enforce_cap(db: Database, settings: Settings) -> int:
    """Evict least recently used entries until the cache fits VOICE_CACHE_MAX_BYTES; returns how many went."""
    cap = settings.cache_max_bytes
    if not cap:
        return 0
    excess = total_bytes(db, settings) - cap
    evicted = 0
    if excess <= 0:
        return 0
    for doc in _entries(db, settings).find({}, {"_id": 1, "bytes": 1}).sort("accessed_at", 1):
        if excess <= 0:
            break
        evicted += remove(db, settings, {"_id": doc["_id"]})
        excess -= int(doc.get("bytes") or 0)
    log.info("audio cache over VOICE_CACHE_MAX_BYTES=%d: evicted %d entries", cap, evicted)
    return evicted


def prune(db: Database, settings: Settings, now: datetime | None = None) -> dict[str, int]:
    """Remove expired entries with their files, cache files no entry points to, and any excess over the cap."""
    now = now or _now()
    expired = remove(db, settings, {"accessed_at": {"$lte": _fresh_after(settings, now)}})
    referenced = {doc["audio_id"] for doc in _entries(db, settings).find({}, {"audio_id": 1})}
    orphans = 0
    files = db[f"{REPLIES_BUCKET}.files"].find(
        {"metadata.cache": True, "uploadDate": {"$lt": now - ORPHAN_GRACE}}, {"_id": 1}
    )
    for doc in list(files):
        if str(doc["_id"]) not in referenced:
            orphans += delete_audio(db, str(doc["_id"]), bucket=REPLIES_BUCKET)
    return {"expired": expired, "orphans": orphans, "evicted": enforce_cap(db, settings)}


def stats(db: Database, settings: Settings) -> dict[str, int]:
    """{entries, bytes} of the cache."""
    return {"entries": _entries(db, settings).count_documents({}), "bytes": total_bytes(db, settings)}


def main(argv: list[str] | None = None) -> int:
    """`python -m voiceapp.tts.cache {stats,prune,clear}` against MONGO_URI (cron-friendly housekeeping)."""
    import argparse
    import json

    from voiceapp.storage.mongo import get_db

    parser = argparse.ArgumentParser(description="synthesized-audio cache housekeeping")
    parser.add_argument("action", choices=("stats", "prune", "clear"))
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    db = get_db(settings)
    if args.action == "prune":
        out: dict = prune(db, settings)
    elif args.action == "clear":
        out = {"removed": remove(db, settings, {})}
    else:
        out = stats(db, settings)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
