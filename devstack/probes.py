"""Probes: a free port, whether a port, a Redis, a MongoDB or an HTTP endpoint answers."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def reusable_port(port: int | None) -> int:
    """The port a restarted service had (clients keep their URL), unless someone else took it."""
    if port and not port_open("127.0.0.1", port):
        return port
    return free_port()


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """True when the Redis at `url` answers PING."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):
        return False
    finally:
        client.close()


def mongo_answers(uri: str, timeout: float = 2.0) -> bool:
    """True when the MongoDB at `uri` answers ping."""
    import pymongo
    from pymongo.errors import PyMongoError

    try:
        client: pymongo.MongoClient = pymongo.MongoClient(uri, serverSelectionTimeoutMS=int(timeout * 1000))
        with client:
            return client.admin.command("ping").get("ok") == 1.0
    except (PyMongoError, ValueError):
        return False


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False
