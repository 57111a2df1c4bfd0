"""Fixtures on real services: a whole local stack (Redis, MongoDB-wire, API, one worker per queue)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

import devstack as stack
from voiceapp.config import Settings

# Quotas of the open project `demo` for stacks shared by many tests (the defaults suit one public demo).
OPEN_DEMO_QUOTAS = dict(
    open_project_max_sessions=1000,
    open_project_max_websockets=1000,
    session_max_websockets=20,
    rate_limit_open_project="1200/minute",
    rate_limit_utterances="600/minute",
)


# The test pyramid, marked by what a test needs (its fixture closure), never by hand:
#   unit        in-process only (models, decoders, parsers); `make check` runs these
#   accuracy    in-process, but a speech model over a whole recording corpus (WER bounds): a minute of CPU
#   integration the MongoDB-wire server and/or Redis, no API or workers
#   system      a whole stack (API, workers), faults, the browser, the deployment guide
SYSTEM_FIXTURES = frozenset({"live", "front", "demo_kb", "ops_stack"})
INTEGRATION_FIXTURES = frozenset({"mongo_uri", "private_redis_url"})
# Corpus fixtures: every recording of a set decoded by a speech model (kept out of `make check`'s minute budget).
ACCURACY_FIXTURES = frozenset({"russian", "clips"})
# Modules that start their own stacks or services in module fixtures.
SYSTEM_MODULES = frozenset(
    {
        "test_bad_input",
        "test_bench",
        "test_deploy",
        "test_docs_commands",
        "test_faults",
        "test_flower",
        "test_secrets",
        "test_stack",
        "test_system_packages",
        "test_widget",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test unit, accuracy, integration or system by the services (or corpora) its fixtures need."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        module = item.module.__name__.rsplit(".", 1)[-1] if getattr(item, "module", None) else ""
        if names & SYSTEM_FIXTURES or module in SYSTEM_MODULES:
            item.add_marker(pytest.mark.system)
        elif names & INTEGRATION_FIXTURES:
            item.add_marker(pytest.mark.integration)
        elif names & ACCURACY_FIXTURES:
            item.add_marker(pytest.mark.accuracy)
        else:
            item.add_marker(pytest.mark.unit)


# The test session's running stack (resolved settings, base_url, ws_url, db, its processes): devstack's helper.
Live = stack.PrivateStack


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The default settings (nothing from the environment) in a temporary home of the test session."""
    return Settings.from_env({}, home=str(tmp_path_factory.mktemp("home")))


@pytest.fixture
def engine(settings: Settings):
    """The default speech-recognition engine (tiny.en) as get_engine gives it: loaded once, unless a test cleared the
    engine cache (then it is loaded again, so `get_engine(settings) is engine` holds in every test)."""
    from voiceapp.stt.registry import get_engine

    return get_engine(settings)


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    """A MongoDB-wire server (memory engine) of the test session; tests use fresh database names on it."""
    with stack.private_mongo() as uri:
        yield uri


@pytest.fixture
def db_settings(mongo_uri: str):
    """Default settings on a new, migrated, empty database of the session's wire server (dropped afterwards)."""
    from tests.support import fresh_database

    with fresh_database(mongo_uri) as settings:
        yield settings


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """Start the full stack once for the test session, in a temporary home, on free ports."""
    requested = stack.private_settings(
        tmp_path_factory.mktemp("voiceapp-home"),
        session_timeout=600,
        open_projects=("demo",),
        # The suite opens many sessions of the open project `demo`: lift its (small) open-project quotas.
        **OPEN_DEMO_QUOTAS,
    )
    with stack.private_stack(requested, mongo_engine="memory") as running:
        yield running


@pytest.fixture(scope="session")
def demo_kb(live: Live) -> None:
    """The demo knowledge base loaded into project `demo`."""
    from voiceapp.dialog.knowledge import load_demo

    load_demo(live.db, live.settings, "demo")


@dataclass(frozen=True)
class Front(Live):
    """An extra API process-in-a-thread with its own settings, on the live stack's Redis and MongoDB."""

    app: object = None

    @property
    def redis(self):
        return self.app.extensions["voiceapp"].redis


_redis_dbs = itertools.cycle(range(1, 16))


@pytest.fixture
def front(live: Live):
    """Factory: start(**setting overrides) -> Front on a fresh Redis database and a fresh MongoDB database.

    Redis database 0 belongs to the live stack; each front gets another one (flushed), so limits,
    slots and queues counted here are its own. No worker consumes its queues.
    """
    import threading
    import uuid

    from werkzeug.serving import make_server

    import migrations
    from voiceapp import create_app

    servers = []
    redis_db = next(_redis_dbs)
    base_redis = live.settings.redis_url.rsplit("/", 1)[0]

    def start(**overrides) -> Front:
        settings = live.settings.replace(
            redis_url=f"{base_redis}/{redis_db}", mongo_db=f"front_{uuid.uuid4().hex[:8]}", **overrides
        )
        app = create_app(settings)
        if not servers:
            app.extensions["voiceapp"].redis.flushdb()
        from voiceapp.storage.mongo import get_db

        migrations.migrate(get_db(settings), settings)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return Front(app=app, settings=settings, base_url=f"http://127.0.0.1:{server.server_port}")

    yield start
    for server in servers:
        server.shutdown()


@pytest.fixture(scope="session")
def private_redis_url() -> Iterator[str]:
    """A redis-server of the test session (no persistence, free port) for tests that need Redis but no stack."""
    with stack.private_redis() as url:
        yield url


@pytest.fixture(scope="session")
def ops_stack(tmp_path_factory: pytest.TempPathFactory):
    """A stack with Flower and an entrypoint-started stt worker with /metrics (tests/ops.py), once per test run."""
    from tests.ops import start_ops_stack

    ops, stop = start_ops_stack(tmp_path_factory)
    yield ops
    stop()


@pytest.fixture(scope="session")
def ops_turn(ops_stack) -> dict:
    """One finished spoken turn through the ops stack: its session and result."""
    from tests.ops import spoken_turn

    return spoken_turn(ops_stack)
