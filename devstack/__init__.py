"""devstack: the local stack supervisor behind `voiceapp up/down/status`, the tests and the benchmark.

Redis, the MongoDB-wire server, the HTTP API and the Celery workers run as background processes. Every process
`up` starts is recorded (pid, command, log) in <home>/run/stack.json; `down` stops only those. Services found
already running (a reachable REDIS_URL, a configured MONGO_URI) are used, never stopped.

A development tool, not part of the service: `voiceapp/` never imports it (the CLI's up/down/status import it
lazily) and the container image does not ship it. Modules: `paths` (home, state, secrets), `processes` (spawn,
liveness, stop), `probes`, `binaries` (redis-server, a Python for the wire server), `storage` and `apps` (the
services), `supervisor` (up/down/status/resolve), `private` (a private stack for tests and the benchmark),
`turns` (a turn over the HTTP API, as a client makes it).
"""

from __future__ import annotations

from .binaries import MONGOECO_REQUIREMENT, find_mongo_python, find_redis_server, mongo_python_candidates
from .paths import PROJECT_ROOT, WIRE_SERVER, flower_auth, home_dir, load_state, run_dir
from .private import (
    PrivateStack,
    private_mongo,
    private_redis,
    private_settings,
    private_stack,
    start_private,
)
from .probes import free_port, mongo_answers, redis_answers
from .processes import StackError, is_alive
from .supervisor import Running, api_url, down, resolve, status, up

__all__ = [
    "MONGOECO_REQUIREMENT",
    "PROJECT_ROOT",
    "WIRE_SERVER",
    "PrivateStack",
    "Running",
    "StackError",
    "api_url",
    "down",
    "find_mongo_python",
    "find_redis_server",
    "flower_auth",
    "free_port",
    "home_dir",
    "is_alive",
    "load_state",
    "mongo_answers",
    "mongo_python_candidates",
    "private_mongo",
    "private_redis",
    "private_settings",
    "private_stack",
    "redis_answers",
    "resolve",
    "run_dir",
    "start_private",
    "status",
    "up",
]
