"""The interface every text-to-speech provider implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from voiceapp.models import Synthesis


@runtime_checkable
class TtsProvider(Protocol):
    """Speaks text; `name` is its TTS_DEFAULT_PROVIDER key.

    A provider module also exposes check(settings), create(settings), cache_key(settings),
    voice_for(settings, requested, language) and output_format(settings), so the cache key of a
    sentence is known without creating the provider or calling the vendor.
    """

    name: str

    def synthesize(self, text: str, voice: str | None = None, language: str | None = None) -> Synthesis:
        """Audio for `text` (WAV unless the provider says otherwise in `mime_type`)."""
        ...
