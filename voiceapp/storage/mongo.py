"""MongoDB client: one per (process, URI), tz-aware, with short timeouts."""

from __future__ import annotations

import os
import re
import threading

from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import PyMongoError

from voiceapp.config import Settings
from voiceapp.errors import StorageUnavailable

_clients: dict[tuple[int, str], MongoClient] = {}
_lock = threading.Lock()


def redact_uri(uri: str) -> str:
    """The URI with any password replaced, safe for logs and error messages."""
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", uri)


def get_client(settings: Settings) -> MongoClient:
    """The process's client for settings.mongo_uri (a forked worker gets its own)."""
    uri = settings.mongo_uri
    if not uri:
        raise StorageUnavailable("MONGO_URI is not set: point it at MongoDB (or start the local wire server)")
    # pymongo clients are not fork-safe: key by pid so Celery prefork children reconnect.
    key = (os.getpid(), uri)
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = MongoClient(
                uri,
                serverSelectionTimeoutMS=3000,
                connectTimeoutMS=3000,
                socketTimeoutMS=30000,
                tz_aware=True,
                appname="voiceapp",
            )
            _clients[key] = client
        return client


def get_db(settings: Settings) -> Database:
    """The voiceapp database (settings.mongo_db) on the cached client."""
    return get_client(settings)[settings.mongo_db]


def ping(settings: Settings) -> None:
    """Check MongoDB answers; raise StorageUnavailable naming the (redacted) URI if not."""
    try:
        get_client(settings).admin.command("ping")
    except PyMongoError as err:
        raise StorageUnavailable(
            f"MongoDB at {redact_uri(settings.mongo_uri)} is unavailable: {str(err)[:200]}"
        ) from err


def close_clients() -> None:
    """Close every client this process opened (tests, shutdown)."""
    with _lock:
        for (pid, _), client in list(_clients.items()):
            if pid == os.getpid():
                client.close()
        _clients.clear()


def knowledge_meta_collection(settings: Settings) -> str:
    """The collection holding each project's knowledge-base version stamp."""
    return f"{settings.knowledge_collection}_meta"
