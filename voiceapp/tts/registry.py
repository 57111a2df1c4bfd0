"""TTS providers by TTS_DEFAULT_PROVIDER key, loaded once per process."""
from __future__ import annotations

import importlib
import logging
import threading
from types import ModuleType

from voiceapp.config import Settings
from voiceapp.errors import ProviderUnavailable
from voiceapp.tts.base import TtsProvider

_LOGGER = logging.getLogger(__name__)

# key -> module with cache_key(settings), check(settings), create(settings)
PROVIDERS: dict[str, str] = {
    "piper": "voiceapp.tts.piper",
    "elevenlabs": "voiceapp.tts.elevenlabs",
    "azure": "voiceapp.tts.azure",
    "browser": "voiceapp.tts.browser",
}
# Providers that cost nothing per character: where a project over its daily budget is switched to.
FREE_PROVIDERS = ("piper", "browser")

_cache: dict[tuple, TtsProvider] = {}
_lock = threading.Lock()


def _module(name: str) -> ModuleType:
    """The provider module for `name`; ProviderUnavailable when unknown or not part of this build."""
    path = PROVIDERS.get(name)
    if path is None:
        known = ", ".join(sorted(PROVIDERS))
        raise ProviderUnavailable(f"unknown TTS provider {name!r}; choose one of: {known}")
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as err:
        if err.name != path:
            raise
        raise ProviderUnavailable(f"TTS provider {name!r} is not implemented in this build") from err


def get_provider(settings: Settings, name: str | None = None) -> TtsProvider:
    """The provider `name` (default settings.tts_provider), created on first use and then reused."""
    name = (name or settings.tts_provider).strip().lower()
    module = _module(name)
    key = (name, *module.cache_key(settings))
    provider = _cache.get(key)
    if provider is not None:
        return provider
    with _lock:
        provider = _cache.get(key)
        if provider is None:
            provider = module.create(settings)
            _cache[key] = provider
            _LOGGER.info("loaded TTS provider %s", name)
    return provider


def describe(settings: Settings, name: str, voice: str | None, language: str | None) -> tuple[str, str]:
    """(voice, output format) provider `name` would use: the cache key, known without calling the vendor."""
    module = _module(name)
    return module.voice_for(settings, voice, language), module.output_format(settings)


def provider_status(settings: Settings) -> dict[str, str]:
    """Each registered provider -> "ok" or why it cannot run (missing SDK, key or voice)."""
    status: dict[str, str] = {}
    for name in PROVIDERS:
        try:
            problem = _module(name).check(settings)
        except ProviderUnavailable as err:
            problem = err.message
        status[name] = problem or "ok"
    return status


def available_providers(settings: Settings) -> list[str]:
    """Provider keys that can synthesize with these settings."""
    return [name for name, state in provider_status(settings).items() if state == "ok"]


def warm(settings: Settings) -> TtsProvider:
    """Load the default provider and speak once so the first reply is not slow (worker start)."""
    provider = get_provider(settings)
    warm_up = getattr(provider, "warm", None)
    if callable(warm_up):
        warm_up()
    return provider


def clear_cache() -> None:
    """Forget loaded providers (tests, reconfiguration)."""
    with _lock:
        _cache.clear()
