"""TTS provider "elevenlabs": the ElevenLabs HTTP API through its official SDK (pip extra `elevenlabs`)."""

from __future__ import annotations

import hashlib
import importlib.util
import math
from typing import Any

from voiceapp.config import Settings
from voiceapp.errors import ProviderUnavailable, TtsError
from voiceapp.models import Synthesis

NAME = "elevenlabs"

_MIME = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "opus": "audio/ogg",
    "pcm": "audio/L16",
    "ulaw": "audio/basic",
    "alaw": "audio/basic",
}


def cache_key(settings: Settings) -> tuple:
    """Settings that change the client (the key only as a digest: loaded providers are keyed by this)."""
    digest = hashlib.sha256(settings.elevenlabs_api_key.encode()).hexdigest()[:16]
    return (
        digest,
        settings.elevenlabs_base_url,
        settings.elevenlabs_model_id,
        settings.elevenlabs_output_format,
        settings.elevenlabs_voice_id,
        settings.tts_timeout,
    )


def check(settings: Settings) -> str | None:
    """Why ElevenLabs cannot run here, or None."""
    if importlib.util.find_spec("elevenlabs") is None:
        return "the ElevenLabs SDK is not installed: pip install 'voiceapp[elevenlabs]'"
    if not settings.elevenlabs_api_key:
        return "ElevenLabs needs an API key: set ELEVENLABS_API_KEY"
    return None


def voice_for(settings: Settings, requested: str | None = None, language: str | None = None) -> str:
    """The voice id that will speak: the requested one or ELEVENLABS_VOICE_ID."""
    return requested or settings.elevenlabs_voice_id


def output_format(settings: Settings) -> str:
    """The SDK's output_format, e.g. mp3_44100_128 (part of the cache key)."""
    return settings.elevenlabs_output_format


def mime_type(fmt: str) -> str:
    """HTTP content type of an ElevenLabs output format."""
    return _MIME.get(fmt.split("_", 1)[0], "application/octet-stream")


def create(settings: Settings) -> ElevenLabsProvider:
    """A client for the configured account (no network call until the first synthesis)."""
    problem = check(settings)
    if problem:
        raise ProviderUnavailable(problem)
    return ElevenLabsProvider(settings)


class ElevenLabsProvider:
    """Calls POST /v1/text-to-speech/{voice_id}; one request per sentence, no SDK retries (the chain falls back)."""

    name = NAME

    def __init__(self, settings: Settings) -> None:
        from elevenlabs.client import ElevenLabs

        options: dict[str, Any] = {"api_key": settings.elevenlabs_api_key, "timeout": settings.tts_timeout}
        if settings.elevenlabs_base_url:
            options["base_url"] = settings.elevenlabs_base_url.rstrip("/")
        self._client = ElevenLabs(**options)
        self._settings = settings
        self.voice = settings.elevenlabs_voice_id
        self.format = settings.elevenlabs_output_format

    def synthesize(self, text: str, voice: str | None = None, language: str | None = None) -> Synthesis:
        """Audio of `text` in `voice` (default ELEVENLABS_VOICE_ID), in ELEVENLABS_OUTPUT_FORMAT."""
        if not text or not text.strip():
            raise TtsError("nothing to synthesize: empty text", status=400)
        voice_id = voice_for(self._settings, voice)
        try:
            chunks = self._client.text_to_speech.convert(voice_id, **self._request(text, language))
            audio = b"".join(chunks)
        except Exception as err:  # noqa: BLE001  (the SDK raises ApiError, httpx and pydantic errors)
            raise TtsError(f"elevenlabs failed: {_describe(err)}") from None
        if not audio:
            raise TtsError("elevenlabs returned no audio")
        return Synthesis(
            audio=audio,
            mime_type=mime_type(self.format),
            provider=self.name,
            voice=voice_id,
            sample_rate=_rate(self.format),
            duration=None,
            extra={
                "characters": len(text),
                "language": language,
                "format": self.format,
                "model_id": self._settings.elevenlabs_model_id,
            },
        )

    def _request(self, text: str, language: str | None) -> dict:
        """Keyword arguments of convert()."""
        request = {
            "text": text,
            "model_id": self._settings.elevenlabs_model_id,
            "output_format": self.format,
            "request_options": {"timeout_in_seconds": max(1, math.ceil(self._settings.tts_timeout)), "max_retries": 0},
        }
        # Only the *_v2_5 models accept language enforcement; the others answer 400 if it is sent.
        if language and "v2_5" in self._settings.elevenlabs_model_id:
            request["language_code"] = language.split("-")[0].lower()
        return request


def _rate(fmt: str) -> int | None:
    """Sample rate from a format name like mp3_44100_128."""
    parts = fmt.split("_")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def _describe(err: Exception) -> str:
    """A short, secret-free description of an SDK error."""
    status = getattr(err, "status_code", None)
    if status is not None:
        body = getattr(err, "body", None)
        detail = body.get("detail") if isinstance(body, dict) else None
        if isinstance(detail, dict):
            detail = detail.get("message") or detail.get("status")
        return f"HTTP {status}" + (f": {str(detail)[:200]}" if detail else "")
    return f"{type(err).__name__}: {str(err)[:200]}"
