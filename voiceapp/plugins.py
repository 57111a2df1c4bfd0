"""Engines and providers registered by a string key (the value of their setting), loaded lazily.

Each key names a module with `cache_key(settings)`, `check(settings)` (None or why it cannot run
here, without loading anything heavy) and `create(settings)`. Instances are created once per
process and reused: models load once per worker.
"""

from __future__ import annotations

import importlib
import logging
import threading
from types import ModuleType
from typing import Any, Generic, TypeVar

from .config import Settings
from .errors import ProviderUnavailable

T = TypeVar("T")
_LOGGER = logging.getLogger(__name__)


class Registry(Generic[T]):
    """Plugins of one kind (e.g. "STT engine") by key."""

    def __init__(self, kind: str, modules: dict[str, str], setting: str) -> None:
        self.kind = kind
        self.modules = modules
        self.setting = setting
        self._cache: dict[tuple, T] = {}
        self._lock = threading.Lock()

    def module(self, name: str) -> ModuleType:
        """The module for `name`; ProviderUnavailable when unknown or not part of this build."""
        path = self.modules.get(name)
        if path is None:
            known = ", ".join(sorted(self.modules))
            raise ProviderUnavailable(f"unknown {self.kind} {name!r} (see {self.setting}); choose one of: {known}")
        try:
            return importlib.import_module(path)
        except ModuleNotFoundError as err:
            if err.name != path:
                raise
            raise ProviderUnavailable(f"{self.kind} {name!r} is not implemented in this build") from err

    def get(self, settings: Settings, name: str) -> T:
        """The instance for `name`, created on first use and then reused."""
        module = self.module(name)
        key: tuple[Any, ...] = (name, *module.cache_key(settings))
        instance = self._cache.get(key)
        if instance is not None:
            return instance
        with self._lock:
            # Two threads may race on the first request; only one loads the model.
            instance = self._cache.get(key)
            if instance is None:
                instance = module.create(settings)
                self._cache[key] = instance
                _LOGGER.info("loaded %s %s", self.kind, name)
        return instance

    def status(self, settings: Settings) -> dict[str, str]:
        """Each key -> "ok" or why it cannot run here (missing SDK, key, model files)."""
        status: dict[str, str] = {}
        for name in self.modules:
            try:
                problem = self.module(name).check(settings)
            except ProviderUnavailable as err:
                problem = err.message
            status[name] = problem or "ok"
        return status

    def available(self, settings: Settings) -> list[str]:
        """Keys usable with these settings."""
        return [name for name, state in self.status(settings).items() if state == "ok"]

    def clear(self) -> None:
        """Forget created instances (tests, reconfiguration)."""
        with self._lock:
            self._cache.clear()


def warm(instance: T) -> T:
    """Run the instance's optional warm-up so the first real request is not slow."""
    warm_up = getattr(instance, "warm", None)
    if callable(warm_up):
        warm_up()
    return instance
