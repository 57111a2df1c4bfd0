"""TTS providers by TTS_DEFAULT_PROVIDER key, loaded once per process."""

from __future__ import annotations

import logging
from types import ModuleType

from voiceapp.config import Settings, language_map
from voiceapp.errors import ProviderUnavailable, VoiceError
from voiceapp.plugins import Registry
from voiceapp.plugins import warm as warm_instance
from voiceapp.tts.base import TtsProvider

# key -> module with cache_key(settings), check(settings), create(settings)
PROVIDERS: dict[str, str] = {
    "piper": "voiceapp.tts.piper",
    "elevenlabs": "voiceapp.tts.elevenlabs",
    "azure": "voiceapp.tts.azure",
    "browser": "voiceapp.tts.browser",
    "festival": "voiceapp.tts.festival",
}
# Providers that cost nothing per character: where a project over its daily budget is switched to.
FREE_PROVIDERS = ("piper", "festival", "browser")

_LOGGER = logging.getLogger(__name__)
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


def speaks(settings: Settings, name: str, language: str | None) -> bool:
    """Whether provider `name` has a voice for `language` (providers without `speaks` speak every language)."""
    try:
        check = getattr(_module(name), "speaks", None)
    except ProviderUnavailable:
        return True  # unknown names fail later with their own error
    return bool(check(settings, language)) if check else True


def mapped_voice(settings: Settings, language: str | None) -> tuple[str, str | None] | None:
    """(provider, voice or None) that TTS_VOICES names for `language`, or None."""
    if not language:
        return None
    code = language.replace("_", "-").split("-")[0].lower()
    choice = language_map(settings.tts_voices).get(code)
    if not choice:
        return None
    provider, _, voice = choice.partition("/")
    return provider.strip().lower(), voice.strip() or None


def provider_status(settings: Settings) -> dict[str, str]:
    """Each registered provider -> "ok" or why it cannot run (missing SDK, key or voice)."""
    return _providers.status(settings)


def available_providers(settings: Settings) -> list[str]:
    """Provider keys that can synthesize with these settings."""
    return _providers.available(settings)


def warm(settings: Settings) -> TtsProvider:
    """Load the default provider and speak once so the first reply is not slow (worker start).

    When VOICE_DEFAULT_LANGUAGE is spoken by another provider (Russian: festival), that one is started too.
    """
    provider = warm_instance(get_provider(settings))
    other = language_provider(settings, settings.default_language)
    if other and other != provider.name:
        try:
            warm_instance(get_provider(settings, other))
        except VoiceError as err:
            _LOGGER.warning("could not start TTS provider %s: %s", other, err.message)
    return provider


def language_provider(settings: Settings, language: str | None) -> str | None:
    """The provider that speaks `language` when no session names one: TTS_VOICES, else the first with a voice."""
    mapped = mapped_voice(settings, language)
    if mapped:
        return mapped[0]
    for name in (settings.tts_provider, *settings.tts_fallback_chain):
        if speaks(settings, name.strip().lower(), language) and name.strip().lower() in available_providers(settings):
            return name.strip().lower()
    return None


def clear_cache() -> None:
    """Forget loaded providers (tests, reconfiguration)."""
    _providers.clear()
