"""TTS provider "azure": Azure AI Speech neural voices through its SDK (pip extra `azure`)."""

from __future__ import annotations

import hashlib
import importlib.util
from xml.sax.saxutils import escape, quoteattr

from voiceapp.config import Settings
from voiceapp.errors import ProviderUnavailable, TtsError
from voiceapp.models import Synthesis

NAME = "azure"
SAMPLE_RATE = 24_000
# A neural voice per language when the session names none (AZURE_SPEECH_VOICE covers its own locale).
LANGUAGE_VOICES = {
    "en-US": "en-US-JennyNeural",
    "en-GB": "en-GB-SoniaNeural",
    "ru-RU": "ru-RU-SvetlanaNeural",
    "de-DE": "de-DE-KatjaNeural",
    "fr-FR": "fr-FR-DeniseNeural",
    "es-ES": "es-ES-ElviraNeural",
}


def cache_key(settings: Settings) -> tuple:
    """Settings that change the synthesizer (the key only as a digest)."""
    digest = hashlib.sha256(settings.azure_speech_key.encode()).hexdigest()[:16]
    return (digest, settings.azure_speech_region, settings.azure_speech_host, settings.azure_speech_voice)


def check(settings: Settings) -> str | None:
    """Why Azure cannot run here, or None."""
    if importlib.util.find_spec("azure.cognitiveservices.speech") is None:
        return "the Azure Speech SDK is not installed: pip install 'voiceapp[azure]'"
    if not settings.azure_speech_key:
        return "Azure Speech needs a key: set AZURE_SPEECH_KEY (and AZURE_SPEECH_REGION)"
    if not (settings.azure_speech_region or settings.azure_speech_host):
        return "Azure Speech needs a region: set AZURE_SPEECH_REGION"
    return None


def voice_for(settings: Settings, requested: str | None = None, language: str | None = None) -> str:
    """The voice that will speak: requested, else one for the language, else AZURE_SPEECH_VOICE."""
    if requested:
        return requested
    default = settings.azure_speech_voice
    if language and not default.lower().startswith(language.lower() + "-"):
        return LANGUAGE_VOICES.get(_locale(language), default)
    return default


def _locale(language: str) -> str:
    """A bare code ("ru", as detection reports it) -> the first known locale for it ("ru-RU")."""
    if "-" in language or "_" in language:
        return language.replace("_", "-")
    return next((loc for loc in LANGUAGE_VOICES if loc.split("-")[0] == language.lower()), language)


def output_format(settings: Settings) -> str:
    """What the audio is (part of the cache key)."""
    return f"wav_{SAMPLE_RATE}"


def ssml(text: str, voice: str, language: str) -> str:
    """The SSML document Azure speaks (text escaped: replies may contain <, & or quotes)."""
    return (
        f'<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang={quoteattr(language)}>'
        f"<voice name={quoteattr(voice)}>{escape(text)}</voice></speak>"
    )


def speech_config(settings: Settings):
    """The SDK's SpeechConfig: AZURE_SPEECH_HOST (a local endpoint) or AZURE_SPEECH_REGION."""
    import azure.cognitiveservices.speech as speechsdk

    if settings.azure_speech_host:
        config = speechsdk.SpeechConfig(subscription=settings.azure_speech_key, host=settings.azure_speech_host)
    else:
        config = speechsdk.SpeechConfig(subscription=settings.azure_speech_key, region=settings.azure_speech_region)
    config.set_speech_synthesis_output_format(speechsdk.SpeechSynthesisOutputFormat.Riff24Khz16BitMonoPcm)
    return config


def create(settings: Settings) -> AzureProvider:
    """A provider for the configured resource (no network call until the first synthesis)."""
    problem = check(settings)
    if problem:
        raise ProviderUnavailable(problem)
    return AzureProvider(settings)


class AzureProvider:
    """One SSML request per sentence; 24 kHz mono PCM16 WAV out."""

    name = NAME

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._config = speech_config(settings)
        self.voice = settings.azure_speech_voice
        self.format = output_format(settings)

    def synthesize(self, text: str, voice: str | None = None, language: str | None = None) -> Synthesis:
        """WAV audio of `text`; a cancelled synthesis raises TtsError with Azure's reason."""
        import azure.cognitiveservices.speech as speechsdk

        if not text or not text.strip():
            raise TtsError("nothing to synthesize: empty text", status=400)
        name = voice_for(self._settings, voice, language)
        locale = _locale(language) if language else "-".join(name.split("-")[:2])
        # A synthesizer per call: the SDK's objects are not safe to share between worker threads.
        synthesizer = speechsdk.SpeechSynthesizer(speech_config=self._config, audio_config=None)
        result = synthesizer.speak_ssml_async(ssml(text, name, locale)).get()
        if result.reason != speechsdk.ResultReason.SynthesizingAudioCompleted:
            raise TtsError(f"azure failed: {_cancellation(result)}")
        audio = bytes(result.audio_data)
        if len(audio) <= 44:
            raise TtsError("azure returned no audio")
        return Synthesis(
            audio=audio,
            mime_type="audio/wav",
            provider=self.name,
            voice=name,
            sample_rate=SAMPLE_RATE,
            duration=round((len(audio) - 44) / 2 / SAMPLE_RATE, 3),
            extra={"characters": len(text), "language": locale, "format": self.format},
        )


def _cancellation(result) -> str:
    """Why Azure cancelled (reason, error code, details), without the key."""
    import azure.cognitiveservices.speech as speechsdk

    if result.reason != speechsdk.ResultReason.Canceled:
        return f"unexpected result {result.reason}"
    details = result.cancellation_details
    return f"{details.reason} {getattr(details, 'error_code', '')} {(details.error_details or '')[:200]}".strip()
