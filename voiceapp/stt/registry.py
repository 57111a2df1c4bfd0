"""STT engines by STT_ENGINE key, loaded once per process."""

from __future__ import annotations

import logging
from types import ModuleType

from voiceapp.config import Settings
from voiceapp.errors import ProviderUnavailable, SttError, VoiceError
from voiceapp.models import DecodedAudio, Transcript
from voiceapp.plugins import Registry
from voiceapp.plugins import warm as warm_instance
from voiceapp.stt.base import SttEngine

_LOGGER = logging.getLogger(__name__)

# key (the STT_ENGINE value) -> module with cache_key(settings), check(settings), create(settings)
ENGINES: dict[str, str] = {
    "faster-whisper": "voiceapp.stt.faster_whisper",
    "vosk": "voiceapp.stt.vosk",
    "openai-whisper": "voiceapp.stt.openai_whisper",
}

_engines: Registry[SttEngine] = Registry("STT engine", ENGINES, "STT_ENGINE")


def _module(name: str) -> ModuleType:
    """The engine module for `name`, or ProviderUnavailable for an unknown key."""
    return _engines.module(name)


def get_engine(settings: Settings, name: str | None = None, language: str | None = None) -> SttEngine:
    """The engine `name` (default STT_ENGINE) for `language` ("auto": detect), created on first use and then reused."""
    key = (name or settings.stt_engine).strip().lower()
    return _engines.get(_for_language(settings, key, language), key)


def _for_language(settings: Settings, name: str, language: str | None) -> Settings:
    """Settings selecting the engine's model for `language` (engines with a model per language, e.g. Whisper)."""
    settings_for = getattr(_module(name), "settings_for", None)
    return settings_for(settings, language) if settings_for else settings


def language_problem(settings: Settings, language: str | None) -> str | None:
    """Why STT_ENGINE cannot recognise `language` with the configured models (None: it can, or detects)."""
    name = settings.stt_engine.strip().lower()
    try:
        check = getattr(_module(name), "language_problem", None)
    except ProviderUnavailable as err:
        return err.message
    return check(settings, language) if check else None


def engine_status(settings: Settings) -> dict[str, str]:
    """Each registered engine -> "ok" or why it cannot run here (without loading models)."""
    return _engines.status(settings)


def available_engines(settings: Settings | None = None) -> list[str]:
    """Engine keys usable here: SDK installed (and, given settings, model files present)."""
    return _engines.available(settings or Settings.from_env({}))


def _engine_names(settings: Settings) -> list[str]:
    """STT_ENGINE, then STT_FALLBACK_ENGINE when it is another one."""
    names = [settings.stt_engine.strip().lower()]
    fallback = (settings.stt_fallback_engine or "").strip().lower()
    if fallback and fallback != names[0]:
        names.append(fallback)
    return names


def usable_engine(settings: Settings, language: str | None = None) -> SttEngine:
    """STT_ENGINE, or STT_FALLBACK_ENGINE when the first cannot be loaded (live recognition keeps one engine)."""
    names = _engine_names(settings)
    for name in names[:-1]:
        try:
            return get_engine(settings, name, language)
        except (ProviderUnavailable, SttError) as err:
            _LOGGER.warning("STT engine %s unavailable, using %s: %s", name, names[-1], err.message)
    return get_engine(settings, names[-1], language)


def transcribe_with_fallback(settings: Settings, audio: DecodedAudio, language: str | None = None) -> Transcript:
    """Recognise with STT_ENGINE, then STT_FALLBACK_ENGINE if the first is unavailable or fails."""
    names = _engine_names(settings)
    errors: list[VoiceError] = []
    for name in names:
        try:
            return get_engine(settings, name, language).transcribe(audio, language)
        except (ProviderUnavailable, SttError) as err:
            _LOGGER.warning("STT engine %s failed: %s", name, err.message)
            errors.append(err)
    if len(errors) == 1:
        raise errors[0]
    detail = "; ".join(f"{name}: {err.message}" for name, err in zip(names, errors, strict=True))
    raise SttError(f"all speech recognition engines failed ({detail})")


def warm(settings: Settings) -> SttEngine:
    """Load STT_ENGINE and run it once so the first real request is not slow (worker start).

    When VOICE_DEFAULT_LANGUAGE needs another model (ru, auto: multilingual base), that one is warmed too:
    a Russian-first deployment's first visitor must not wait for it to load.
    """
    engine = warm_instance(get_engine(settings))
    name = settings.stt_engine.strip().lower()
    if _for_language(settings, name, settings.default_language) != settings:
        try:
            warm_instance(get_engine(settings, name, settings.default_language))
        except (ProviderUnavailable, SttError) as err:
            _LOGGER.warning("could not load the model for %s: %s", settings.default_language, err.message)
    return engine


def clear_cache() -> None:
    """Forget loaded engines (tests, reconfiguration)."""
    _engines.clear()
