"""Fixtures on real services: a whole local stack (Redis, MongoDB-wire, API, one worker per queue)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from voiceapp import stack
from voiceapp.config import Settings


@dataclass(frozen=True)
class Live:
    """A running stack: its settings (resolved addresses) and handles tests use."""

    settings: Settings
    base_url: str

    @property
    def ws_url(self) -> str:
        return "ws" + self.base_url[len("http"):]

    @property
    def db(self):
        from voiceapp.storage.mongo import get_db

        return get_db(self.settings)


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Live:
    """Start the full stack once for the test session, in a temporary home, on free ports."""
    home: Path = tmp_path_factory.mktemp("voiceapp-home")
    settings = Settings.from_env(
        {}, home=str(home), api_port=stack.free_port(), redis_url=f"redis://127.0.0.1:{stack.free_port()}/0",
        session_timeout=600,
    )
    stack.up(settings, mongo_engine="memory")
    resolved = stack.resolve(settings)
    import migrations
    from voiceapp.storage.mongo import get_db

    migrations.migrate(get_db(resolved), resolved)
    yield Live(settings=resolved, base_url=stack.api_url(resolved))
    stack.down(settings)


@pytest.fixture(scope="session")
def demo_kb(live: Live) -> None:
    """The demo knowledge base loaded into project `demo`."""
    from voiceapp.dialog.knowledge import load_demo

    load_demo(live.db, live.settings, "demo")
