"""TTS providers by TTS_DEFAULT_PROVIDER key, loaded once per process."""

from __future__ import annotations

from types import ModuleType

from voiceapp.config import Settings
from voiceapp.plugins import Registry
from voiceapp.plugins import warm as warm_instance
from voiceapp.tts.base import TtsProvider

# key -> module with cache_key(settings), check(settings), create(settings)
PROVIDERS: dict[str, str] = {
    "piper": "voiceapp.tts.piper",
    "elevenlabs": "voiceapp.tts.elevenlabs",
    "azure": "voiceapp.tts.azure",
    "browser": "voiceapp.tts.browser",
}
# Providers that cost nothing per character: where a project over its daily budget is switched to.
FREE_PROVIDERS = ("piper", "browser")

_providers: Registry[TtsProvider] = Registry("TTS provider", PROVIDERS, "TTS_DEFAULT_PROVIDER")


def _module(name: str) -> ModuleType:
    """The provider module for `name`; ProviderUnavailable when unknown or not part of this build."""
    return _providers.module(name)


def get_provider(settings: Settings, name: str | None = None) -> TtsProvider:
    """The provider `name` (default settings.tts_provider), created on first use and then reused."""
    return _providers.get(settings, (name or settings.tts_provider).strip().lower())


def describe(settings: Settings, name: str, voice: str | None, language: str | None) -> tuple[str, str]:
    """(voice, output format) provider `name` would use: the cache key, known without calling the vendor."""
    module = _module(name)
    return module.voice_for(settings, voice, language), module.output_format(settings)


def provider_status(settings: Settings) -> dict[str, str]:
    """Each registered provider -> "ok" or why it cannot run (missing SDK, key or voice)."""
    return _providers.status(settings)


def available_providers(settings: Settings) -> list[str]:
    """Provider keys that can synthesize with these settings."""
    return _providers.available(settings)


def warm(settings: Settings) -> TtsProvider:
    """Load the default provider and speak once so the first reply is not slow (worker start)."""
    return warm_instance(get_provider(settings))


def clear_cache() -> None:
    """Forget loaded providers (tests, reconfiguration)."""
    _providers.clear()
