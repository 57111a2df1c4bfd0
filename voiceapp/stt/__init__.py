"""Speech recognition: one engine per module, chosen by STT_ENGINE through the registry."""

from voiceapp.stt.base import SttEngine, language_code
from voiceapp.stt.registry import available_engines, get_engine, transcribe_with_fallback, warm

__all__ = ["SttEngine", "available_engines", "get_engine", "language_code", "transcribe_with_fallback", "warm"]
