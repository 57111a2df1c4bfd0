"""Text-to-speech: one provider per module, chosen by TTS_DEFAULT_PROVIDER through the registry."""

from voiceapp.tts.base import TtsProvider
from voiceapp.tts.registry import available_providers, get_provider, warm

__all__ = ["TtsProvider", "available_providers", "get_provider", "warm"]
