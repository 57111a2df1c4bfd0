"""STT engine "openai-whisper": the reference PyTorch Whisper from local `.pt` weights (extra `openai-whisper`)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from voiceapp.config import Settings
from voiceapp.errors import ProviderUnavailable, SttError
from voiceapp.models import DecodedAudio, Transcript
from voiceapp.stt.base import language_code
from voiceapp.stt.filters import keep_segment

NAME = "openai-whisper"
WHISPER_RATE = 16_000


def cache_key(settings: Settings) -> tuple:
    """Settings that change which weights are loaded."""
    return (settings.whisper_model, settings.whisper_device, settings.home)


def weights_path(settings: Settings) -> Path | None:
    """The `.pt` file for WHISPER_MODEL: a path itself, or <home>/models/whisper/<name>.pt, or ~/.cache/whisper."""
    value = settings.whisper_model.strip()
    if value.endswith(".pt"):
        return Path(value) if os.path.isfile(value) else None
    for folder in (Path(settings.home) / "models" / "whisper", Path.home() / ".cache" / "whisper"):
        candidate = folder / f"{value}.pt"
        if candidate.is_file():
            return candidate
    return None


def check(settings: Settings) -> str | None:
    """Why openai-whisper cannot run here, or None."""
    if importlib.util.find_spec("whisper") is None:
        return "the openai-whisper package is not installed: pip install 'voiceapp[openai-whisper]'"
    if weights_path(settings) is None:
        return (
            f"no openai-whisper weights for WHISPER_MODEL={settings.whisper_model!r}: set it to a .pt file "
            f"or put <name>.pt in {Path(settings.home) / 'models' / 'whisper'}"
        )
    return None


def create(settings: Settings) -> OpenAIWhisperEngine:
    """Load the local weights (never downloads)."""
    problem, path = check(settings), weights_path(settings)
    if problem or path is None:
        raise ProviderUnavailable(problem or f"no weights for WHISPER_MODEL={settings.whisper_model!r}")
    return OpenAIWhisperEngine(path, settings.whisper_device)


class OpenAIWhisperEngine:
    """Reference Whisper; slower than faster-whisper on CPU, kept for parity with the seed."""

    name = NAME

    def __init__(self, path: Path, device_setting: str) -> None:
        import torch
        import whisper

        device = device_setting
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            # A file path makes load_model read it instead of downloading.
            self._model = whisper.load_model(str(path), device=device)
        except Exception as err:
            raise ProviderUnavailable(f"could not load openai-whisper weights {str(path)!r}: {err}") from err
        self._fp16 = device == "cuda"
        self.model = path.stem
        self.multilingual = bool(self._model.is_multilingual)

    def transcribe(self, audio: DecodedAudio, language: str | None = None) -> Transcript:
        """Recognise `audio` with greedy decoding."""
        from voiceapp.audio import resample

        lang = language_code(language) if self.multilingual else "en"
        samples = resample(audio.samples, audio.sample_rate, WHISPER_RATE)
        try:
            result = self._model.transcribe(
                samples, language=lang, fp16=self._fp16, temperature=0.0, condition_on_previous_text=False
            )
        except Exception as err:
            raise SttError(f"openai-whisper failed: {err}") from err
        segments = [s for s in result.get("segments", []) if keep_segment(_Seg(s))]
        text = " ".join(s["text"].strip() for s in segments).strip()
        return Transcript(text=text, language=result.get("language") or lang, engine=self.name, model=self.model)


class _Seg:
    """Attribute view of a result segment dict for the shared filters."""

    def __init__(self, data: dict) -> None:
        self.text = data.get("text", "")
        self.no_speech_prob = data.get("no_speech_prob", 0.0)
        self.avg_logprob = data.get("avg_logprob", 0.0)
        self.compression_ratio = data.get("compression_ratio", 0.0)
