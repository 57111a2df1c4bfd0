"""End of turn for hands-free listening: after a short pause, ask a model whether the words are complete.

The model is Smart Turn v3.2 (BSD-2, 8.7 MB ONNX) as shipped inside the `pipecat-ai` wheel. Only the
.onnx file is used, run with onnxruntime + numpy (both already needed by faster-whisper), so the wheel is
installed without its dependencies (`pip install --no-deps pipecat-ai`). Nothing is downloaded.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
from pathlib import Path

import numpy as np

from voiceapp.config import Settings
from voiceapp.errors import ProviderUnavailable

RATE = 16_000
WINDOW_S = 8  # the model hears the last 8 s of the turn
SHIPPED = ("pipecat-ai", "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx")
_LOGGER = logging.getLogger(__name__)
_lock = threading.Lock()
_detectors: dict[str, TurnDetector] = {}
_warned: set[str] = set()


# Words a sentence does not end on: a pause after them is the speaker searching for what comes next.
# The model hears prosody only; synthetic voices give every fragment a falling, final-sounding tone.
OPEN_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "nor",
        "so",
        "because",
        "if",
        "than",
        "that",
        "which",
        "who",
        "whose",
        "whether",
        "to",
        "of",
        "for",
        "in",
        "on",
        "at",
        "by",
        "with",
        "from",
        "about",
        "into",
        "onto",
        "over",
        "under",
        "between",
        "like",
        "my",
        "your",
        "our",
        "their",
        "his",
        "her",
        "its",
        "is",
        "are",
        "was",
        "were",
        "am",
        "be",
        "been",
        "um",
        "uh",
        "er",
        "erm",
        "и",
        "а",
        "но",
        "или",
        "либо",
        "в",
        "во",
        "на",
        "с",
        "со",
        "к",
        "ко",
        "по",
        "о",
        "об",
        "обо",
        "для",
        "от",
        "из",
        "у",
        "за",
        "про",
        "при",
        "над",
        "под",
        "что",
        "чтобы",
        "как",
        "если",
        "когда",
        "мой",
        "моя",
        "моё",
        "мои",
        "ваш",
        "ваша",
        "ваше",
        "ваши",
        "наш",
        "наша",
        "это",
        "не",
        "ни",
        "же",
        # "Можно узнать, ...", "Я хотел спросить, ...": the question follows (bench/russian.endpointing measured
        # Smart Turn at 0.90 "complete" on festival's "Можно узнать." before a 0.7 s pause).
        "узнать",
        "спросить",
        "уточнить",
        "сказать",
        "подсказать",
        "скажите",
        "подскажите",
        "хотел",
        "хотела",
        "хочу",
    ]
)
_TRAILING = "\"'»”)]"


def ends_open(text: str) -> bool:
    """Whether `text` stops where a sentence cannot end: on a function word, a comma or a trailing "..."."""
    stripped = text.strip().rstrip(_TRAILING)
    if not stripped or stripped.endswith(("...", "…", ",", "-", "—", ":")):
        return True
    words = stripped.rstrip(".?!;").split()
    return bool(words) and words[-1].lower().strip(_TRAILING + "\"'«“(") in OPEN_WORDS


def ends_sentence(text: str) -> bool:
    """Whether the words read as a finished sentence: end punctuation (Whisper omits it on fragments), no open end."""
    stripped = text.strip().rstrip(_TRAILING)
    return stripped.endswith((".", "?", "!")) and not ends_open(text)


def model_path(settings: Settings) -> Path:
    """AUDIO_TURN_MODEL_PATH, else the model shipped in the installed pipecat-ai wheel."""
    if settings.turn_model_path:
        path = Path(settings.turn_model_path)
    else:
        try:
            path = Path(str(importlib.metadata.distribution(SHIPPED[0]).locate_file(SHIPPED[1])))
        except importlib.metadata.PackageNotFoundError:
            raise ProviderUnavailable(
                "the end-of-turn model is not installed: pip install --no-deps pipecat-ai "
                "(or set AUDIO_TURN_MODEL_PATH, or AUDIO_ENDPOINT_MODE=silence)"
            ) from None
    if not path.is_file():
        raise ProviderUnavailable(f"end-of-turn model not found at {path}")
    return path


class TurnDetector:
    """Smart Turn v3: probability that the speaker has finished their turn, from the audio alone."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort
        from faster_whisper.feature_extractor import FeatureExtractor

        options = ort.SessionOptions()
        # One thread: the call is ~40 ms and runs beside Whisper decodes that own the cores.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types for bad files
            raise ProviderUnavailable(f"could not load the end-of-turn model {path}: {err}") from err
        self._features = FeatureExtractor(feature_size=80)
        self.path = path

    def probability(self, samples: np.ndarray) -> float:
        """P(turn complete) for 16 kHz mono float audio that ends at the pause."""
        return float(self._session.run(None, {"input_features": self.features(samples)[None]})[0].reshape(-1)[0])

    def features(self, samples: np.ndarray) -> np.ndarray:
        """The model's input: Whisper log-mel (80 x 800) of the last 8 s, zeros padded in front, normalised."""
        size = WINDOW_S * RATE
        audio = np.asarray(samples, dtype=np.float32)[-size:]
        audio = np.pad(audio, (size - audio.size, 0))
        # The model was trained on waveforms scaled to zero mean and unit variance.
        audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
        # Same mel filters, STFT and log scaling as Whisper's extractor; 801 frames for 8 s, the last one dropped.
        return self._features(audio, padding=0)[:, : WINDOW_S * 100].astype(np.float32)


def get_detector(settings: Settings) -> TurnDetector | None:
    """The process's detector, or None (with one warning) when the model cannot be loaded: silence rule only."""
    try:
        path = model_path(settings)
        key = str(path)
        with _lock:
            if key not in _detectors:
                _detectors[key] = TurnDetector(path)
            return _detectors[key]
    except ProviderUnavailable as err:
        if err.message not in _warned:
            _warned.add(err.message)
            _LOGGER.warning("smart endpointing off, ending turns by silence only: %s", err.message)
        return None
