"""MongoDB storage: client, sessions, turns, GridFS audio."""

from voiceapp.storage.mongo import close_clients, get_client, get_db, ping

__all__ = ["close_clients", "get_client", "get_db", "ping"]
