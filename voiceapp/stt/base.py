"""The interface every speech recognition engine implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from voiceapp.models import DecodedAudio, Transcript


@runtime_checkable
class SttEngine(Protocol):
    """Turns decoded audio into text; `name` is its STT_ENGINE key, `model` what it loaded."""

    name: str
    model: str

    def transcribe(self, audio: DecodedAudio, language: str | None = None) -> Transcript:
        """Recognise the whole of `audio`; `language` is a session language such as "en-US"."""
        ...


AUTO = "auto"  # a session language that asks the recogniser to detect the language per utterance


def language_code(language: str | None) -> str | None:
    """Session language ("en-US", "ru_RU", "EN") -> the bare ISO code engines want ("en"); None = detect."""
    if not language:
        return None
    code = language.replace("_", "-").split("-")[0].strip().lower()
    return None if code in ("", AUTO) else code
