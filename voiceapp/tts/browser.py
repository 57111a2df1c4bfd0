"""TTS provider "browser": no server audio; the widget speaks the text with the page's speechSynthesis."""

from __future__ import annotations

from voiceapp.config import Settings
from voiceapp.errors import TtsError
from voiceapp.models import Synthesis

NAME = "browser"
MIME_TYPE = "text/plain"


def cache_key(settings: Settings) -> tuple:
    """The language hint used when a request names none."""
    return (settings.default_language,)


def check(settings: Settings) -> str | None:
    """Always available: it needs no SDK, key or model."""
    return None


def voice_for(settings: Settings, requested: str | None = None, language: str | None = None) -> str:
    """The voice hint passed to the widget (a speechSynthesis voice name, or empty for the page's default)."""
    return requested or ""


def output_format(settings: Settings) -> str:
    """Not audio: nothing is cached for this provider."""
    return "speech-synthesis"


def create(settings: Settings) -> BrowserProvider:
    """The provider (stateless)."""
    return BrowserProvider(settings.default_language)


class BrowserProvider:
    """Returns no audio, only what the widget's speechSynthesis needs: text, language and voice hints."""

    name = NAME

    def __init__(self, default_language: str) -> None:
        self._default_language = default_language
        self.voice = ""
        self.format = "speech-synthesis"

    def synthesize(self, text: str, voice: str | None = None, language: str | None = None) -> Synthesis:
        """An empty Synthesis whose `extra["speech"]` is the hint {text, lang, voice}."""
        if not text or not text.strip():
            raise TtsError("nothing to synthesize: empty text", status=400)
        fallback = "" if self._default_language.lower() == "auto" else self._default_language
        hint = speech_hint(text, language or fallback, voice)
        return Synthesis(
            audio=b"",
            mime_type=MIME_TYPE,
            provider=NAME,
            voice=voice or "",
            extra={"characters": len(text), "language": hint["lang"], "speech": hint},
        )


# A bare language code ("ru", what detection reports) -> the locale speechSynthesis voices are listed under.
LOCALES = {"ru": "ru-RU", "en": "en-US", "de": "de-DE", "fr": "fr-FR", "es": "es-ES", "uk": "uk-UA", "it": "it-IT"}


def speech_hint(text: str, language: str, voice: str | None) -> dict:
    """What the widget passes to SpeechSynthesisUtterance: text, lang and (optional) voice name."""
    return {"text": text, "lang": LOCALES.get(language.lower(), language), "voice": voice or None}
