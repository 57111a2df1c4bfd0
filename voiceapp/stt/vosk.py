"""STT engine "vosk": Kaldi models from VOSK_MODEL_PATH (pip extra `vosk`)."""

from __future__ import annotations

import atexit
import importlib.util
import json
import os

import numpy as np

from voiceapp.config import Settings
from voiceapp.errors import ProviderUnavailable, SttError
from voiceapp.models import DecodedAudio, Transcript
from voiceapp.stt.filters import clean_text

NAME = "vosk"
VOSK_RATE = 16_000


def cache_key(settings: Settings) -> tuple:
    """Settings that change which model is loaded."""
    return (os.path.abspath(settings.vosk_model_path),)


def check(settings: Settings) -> str | None:
    """Why Vosk cannot run here, or None."""
    if importlib.util.find_spec("vosk") is None:
        return "the vosk package is not installed: pip install 'voiceapp[vosk]'"
    if not os.path.isdir(settings.vosk_model_path):
        return f"VOSK_MODEL_PATH={settings.vosk_model_path!r} is not a directory; unpack a Vosk model there"
    return None


def create(settings: Settings) -> VoskEngine:
    """Load the model at VOSK_MODEL_PATH."""
    problem = check(settings)
    if problem:
        raise ProviderUnavailable(problem)
    return VoskEngine(settings.vosk_model_path)


def _label(model_path: str) -> str:
    """A readable model name: the folder, or its parent when packages call it just "model"."""
    parts = os.path.normpath(os.path.abspath(model_path)).split(os.sep)
    return parts[-2] if parts[-1] == "model" and len(parts) > 1 else parts[-1]


class VoskEngine:
    """Offline Kaldi recognition; one recognizer per call because recognizers keep state."""

    name = NAME

    def __init__(self, model_path: str) -> None:
        import vosk

        vosk.SetLogLevel(-1)
        try:
            self._model = vosk.Model(model_path)
        except Exception as err:  # vosk raises a bare Exception for unreadable models
            raise ProviderUnavailable(f"could not load the Vosk model at {model_path!r}: {err}") from err
        self.model = _label(model_path)
        self._vosk = vosk
        # vosk's Model frees itself in __del__, which at interpreter exit runs after vosk's C library handle
        # is gone (an "Exception ignored" traceback in every worker's shutdown): free it while both are alive.
        atexit.register(self._release)

    def _release(self) -> None:
        """Free the Kaldi model now (at exit)."""
        self._model = None

    def transcribe(self, audio: DecodedAudio, language: str | None = None) -> Transcript:
        """Recognise `audio` (the model fixes the language; `language` is reported only)."""
        from voiceapp.audio import float_to_pcm16, resample

        samples = resample(audio.samples, audio.sample_rate, VOSK_RATE)
        try:
            recognizer = self._vosk.KaldiRecognizer(self._model, VOSK_RATE)
            recognizer.SetWords(True)
            recognizer.AcceptWaveform(float_to_pcm16(samples))
            result = json.loads(recognizer.FinalResult())
        except Exception as err:
            raise SttError(f"vosk failed: {err}") from err
        words = result.get("result") or []
        confidence = float(np.mean([w.get("conf", 0.0) for w in words])) if words else 0.0
        return Transcript(
            text=clean_text(result.get("text", "")),
            language=language,
            confidence=round(confidence, 4),
            engine=self.name,
            model=self.model,
        )
