"""Short encoder windows: same words as Whisper's stock 30 s window, never truncating, safe across threads."""

from __future__ import annotations

import dataclasses
import json
import threading
import wave
from pathlib import Path

import numpy as np
import pytest

from voiceapp.audio import decode, float_to_pcm16
from voiceapp.models import DecodedAudio
from voiceapp.stt import get_engine
from voiceapp.stt.faster_whisper import decode_budget
from voiceapp.stt.short_window import (
    DRAFT_MARGIN_S,
    FINAL_MARGIN_S,
    MULTILINGUAL_FINAL_BEAM,
    MULTILINGUAL_FINAL_MARGIN_S,
    restart_cut,
    short_window_failed,
    window_frames,
)
from voiceapp.stt.streaming import StreamingRecognizer
from voiceapp.stt.wer import word_errors

DATA = Path(__file__).resolve().parent / "data"
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
LIBRI_TEXT = (
    "He began a confused complaint against the wizard, who had vanished behind the curtain on the left.",
    "The horizon seems extremely distant.",
)


@pytest.fixture(scope="module")
def jfk_samples(settings) -> np.ndarray:
    """The JFK recording as 16 kHz float samples."""
    return decode((DATA / "jfk.flac").read_bytes(), settings).samples


@pytest.fixture(scope="module")
def clips(settings, jfk_samples) -> list[tuple[str, np.ndarray]]:
    """(reference, 16 kHz samples): the real recordings and Piper-spoken questions."""
    with wave.open(str(DATA / "librispeech_stereo.wav")) as reader:
        pcm = np.frombuffer(reader.readframes(reader.getnframes()), "<i2").reshape(-1, 2)
    out = [(JFK_TEXT, jfk_samples)] + [(LIBRI_TEXT[ch], (pcm[:, ch] / 32768.0).astype(np.float32)) for ch in (0, 1)]
    return out + questions(settings)


def questions(settings) -> list[tuple[str, np.ndarray]]:
    """(reference, 16 kHz samples) of fixed Piper takes of three questions (Piper's voice differs every time)."""
    here = DATA / "en_questions"
    texts = json.loads((here / "transcripts.json").read_text(encoding="utf-8"))
    return [(text, decode((here / name).read_bytes(), settings).samples) for name, text in texts.items()]


class EncoderSpy:
    """Stands in for the CTranslate2 model and records how many frames each encode() got."""

    def __init__(self, model) -> None:
        self._model = model
        self.frames: list[int] = []

    def encode(self, features, *args, **kwargs):
        self.frames.append(features.shape[-1])
        return self._model.encode(features, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._model, name)


@pytest.fixture
def spy(engine):
    real = engine._model.model
    engine._model.model = EncoderSpy(real)
    try:
        yield engine._model.model
    finally:
        engine._model.model = real


def _errors(transcribe, clips) -> tuple[int, int]:
    errors = words = 0
    for reference, samples in clips:
        e, n = word_errors(reference, transcribe(DecodedAudio(samples, 16000), "en").text)
        errors, words = errors + e, words + n
    return errors, words


def test_window_frames_is_the_clip_rounded_up_plus_a_margin_capped_at_30_s():
    assert window_frames(16000 * 2 + 1, 1) == 400  # 2.0001 s -> 3 s + 1 s
    assert window_frames(16000 * 2, 3) == 500
    assert window_frames(16000 * 26, 3) == 2900
    assert window_frames(16000 * 27, 3) is None  # 30 s or more: the stock decode
    assert window_frames(16000 * 45, 1) is None


def test_final_and_draft_encoders_see_the_short_window(engine, spy, jfk_samples):
    audio = DecodedAudio(jfk_samples, 16000)
    fallbacks = engine.window_fallbacks
    engine.transcribe(audio, "en")
    engine.transcribe_draft(audio, "en")
    assert spy.frames == [
        window_frames(jfk_samples.size, FINAL_MARGIN_S),
        window_frames(jfk_samples.size, DRAFT_MARGIN_S),
    ]
    assert spy.frames[0] < 3000 and engine.window_fallbacks == fallbacks


def test_a_short_window_that_restarts_the_sentence_is_cut_there_with_no_second_decode(engine, spy, settings):
    # Measured: Piper questions make tiny.en say the sentence, then start it again in the silence of a 5-6 s
    # window; the stock 30 s window hears the first sentence alone (redoing it cost 0.41-0.45 s here).
    cut = 0
    for text, samples in questions(settings):
        raw, _ = engine._decode(samples, "en", window_frames(samples.size, FINAL_MARGIN_S))
        spy.frames.clear()
        transcript = engine.transcribe(DecodedAudio(samples, 16000), "en")
        if restart_cut(raw) is not None:
            cut += 1
            assert transcript.text == restart_cut(raw)[0].text.strip()
            assert spy.frames == [window_frames(samples.size, FINAL_MARGIN_S)]  # one encode, the short one
        assert word_errors(text, transcript.text)[0] <= 1, transcript.text
    assert cut >= 1, "none of the questions restarted: the case this test is about did not occur"


def test_a_short_window_that_hears_no_words_is_redone_with_the_stock_window(engine, spy):
    fallbacks = engine.window_fallbacks
    engine.transcribe(DecodedAudio(np.zeros(32000, np.float32), 16000), "en")
    assert engine.window_fallbacks == fallbacks + 1
    assert spy.frames == [window_frames(32000, FINAL_MARGIN_S), 3000]


@dataclasses.dataclass
class Segment:
    """The one field of faster-whisper's Segment dataclass that the checks read."""

    text: str


def test_restart_cut_keeps_the_first_sentence_only_when_the_rest_restarts_it():
    segment = Segment
    cut = lambda text: [s.text for s in restart_cut([segment(text)]) or []]  # noqa: E731
    assert cut(" Where can I park my car? Where can I park my") == [" Where can I park my car?"]
    assert cut(" Can I pay by card? Can I pay by card?") == [" Can I pay by card?"]
    assert cut(" Our dogs allowed inside. Our dogs allowed inside. Our dogs") == [" Our dogs allowed inside."]
    assert cut(" Is there free one is there free one is there") == []  # a loop with no sentence end: stock window
    assert cut(" Where can I park? Where can I park my car?") == []  # the visitor started over and said more
    assert cut(" Thanks. Thanks.") == []  # fewer than two words repeated
    assert restart_cut([segment("Hi. Hi there."), segment("Hi.")]) is None


def test_short_window_failure_checks():
    segment = lambda text: type("Segment", (), {"text": text})()  # noqa: E731
    assert short_window_failed([], 2.0) and short_window_failed([segment("  ")], 2.0)
    assert short_window_failed([segment("Where can I park? Where can I park?")], 3.0)
    assert short_window_failed([segment("one two three four five six seven eight nine ten eleven")], 2.0)
    assert not short_window_failed([segment("Where can I park my car?")], 2.0)
    assert not short_window_failed([segment("no no no, thank you thank you")], 3.0)


def test_full_window_setting_keeps_the_stock_30_s_window(settings, clips):
    full = get_engine(settings.replace(whisper_final_window="full"))
    real = full._model.model
    full._model.model = spy = EncoderSpy(real)
    try:
        full.transcribe(DecodedAudio(clips[-1][1], 16000), "en")
    finally:
        full._model.model = real
    assert spy.frames == [3000]


def test_short_windows_give_the_words_of_the_stock_window(settings, engine, clips):
    stock = get_engine(settings.replace(whisper_final_window="full"))
    stock_errors, words = _errors(stock.transcribe, clips)
    final_errors, _ = _errors(engine.transcribe, clips)
    draft_errors, _ = _errors(engine.transcribe_draft, clips)
    assert words > 50
    # Finals may not buy speed with errors; partials are provisional but must stay close.
    assert (final_errors - stock_errors) / words <= 0.01, (final_errors, stock_errors, words)
    assert (draft_errors - stock_errors) / words <= 0.03, (draft_errors, stock_errors, words)


@pytest.mark.parametrize("count", [3, 7], ids=["22s", "41s"])
def test_audio_longer_than_a_short_window_is_never_truncated_or_looped(engine, spy, clips, count):
    # Different sentences back to back (a repeated one would trigger Whisper's random temperature fallback).
    gap = np.zeros(8000, np.float32)
    chosen = (clips + clips)[:count]
    samples = np.concatenate([part for _, audio in chosen for part in (audio, gap)])
    text = engine.transcribe(DecodedAudio(samples, 16000), "en").text
    if samples.size < 26 * 16000:
        errors, words = word_errors(" ".join(ref for ref, _ in chosen), text)
        assert errors / words <= 0.1, text
        # The encoder saw the whole clip plus the margin, far less than 30 s.
        assert spy.frames[0] == window_frames(samples.size, FINAL_MARGIN_S) > samples.size // 160
    else:
        # Past 30 s the short window steps aside: faster-whisper's own 30 s segments, untouched.
        assert text and spy.frames and all(frames == 3000 for frames in spy.frames)


def test_threads_sharing_the_model_keep_their_own_window(engine, clips):
    long_ref, long_samples = clips[0]  # jfk, 11 s
    short_ref, short_samples = clips[-1]
    results: dict[str, list[str]] = {"long": [], "short": [], "errors": []}

    def run(name: str, samples: np.ndarray, draft: bool) -> None:
        try:
            for _ in range(3):
                call = engine.transcribe_draft if draft else engine.transcribe
                results[name].append(call(DecodedAudio(samples, 16000), "en").text)
        except Exception as err:
            results["errors"].append(repr(err))

    threads = [
        threading.Thread(target=run, args=("long", long_samples, False)),
        threading.Thread(target=run, args=("short", short_samples, True)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert results["errors"] == []
    # A window leaking from the short clip's thread would cut jfk to a few seconds.
    for text in results["long"]:
        errors, words = word_errors(long_ref, text)
        assert errors / words <= 0.1, text
    for text in results["short"]:
        assert word_errors(short_ref, text)[0] <= 1, text
    # The shared feature extractor still pads to Whisper's 30 s for everyone else.
    assert engine._model.feature_extractor.nb_max_frames == 3000


def test_decode_budget_never_oversubscribes_the_cores(settings):
    for cores in (1, 2, 4, 8):
        for concurrency in (1, 2, 4, 8):
            threads, slots = decode_budget(settings.replace(worker_concurrency=concurrency), cores)
            assert threads >= 1 and slots >= 1
            assert threads * slots <= cores, (cores, concurrency, threads, slots)
    assert decode_budget(settings.replace(worker_concurrency=4), 2) == (1, 2)
    assert decode_budget(settings.replace(worker_concurrency=1), 2) == (2, 1)
    explicit = settings.replace(whisper_cpu_threads=3, whisper_decode_slots=1)
    assert decode_budget(explicit, 2) == (3, 1)


class CountingEngine:
    """The real engine, counting which kind of decode the recognizer asked for."""

    name, model = "faster-whisper", "tiny.en"

    def __init__(self, engine) -> None:
        self.engine = engine
        self.calls: list[str] = []

    def transcribe(self, audio, language=None):
        self.calls.append("final")
        return self.engine.transcribe(audio, language)

    def transcribe_draft(self, audio, language=None):
        self.calls.append("draft")
        return self.engine.transcribe_draft(audio, language)


def test_streaming_partials_are_drafts_and_the_final_is_not(engine, settings, jfk_samples):
    counting = CountingEngine(engine)
    # jfk_samples pauses ~1 s after "Americans": a 2 s end silence keeps it one utterance.
    recognizer = StreamingRecognizer(counting, settings, "en", end_silence=2.0)
    pcm = float_to_pcm16(np.concatenate([jfk_samples, np.zeros(16000 * 3, np.float32)]))
    finals = []
    for start in range(0, len(pcm), 3200):
        finals += [t for t in recognizer.feed(pcm[start : start + 3200]) if t.final]
    assert len(finals) == 1
    assert word_errors(JFK_TEXT, finals[0].text)[0] / 20 <= 0.15
    assert "draft" in counting.calls and counting.calls[-1] == "final"


class HeldDraftEngine(CountingEngine):
    """The real engine whose drafts wait until the test lets them go (a draft still in flight at the end)."""

    def __init__(self, engine) -> None:
        super().__init__(engine)
        self.started, self.release = threading.Event(), threading.Event()

    def transcribe_draft(self, audio, language=None):
        self.started.set()
        self.release.wait(30)
        return super().transcribe_draft(audio, language)


def test_background_drafts_never_hold_up_the_final(engine, settings, jfk_samples):
    """Live turns decode drafts on their own thread: `finish` decodes the final while a draft is still running,
    and that late draft never comes out as a partial of the next utterance."""
    held = HeldDraftEngine(engine)
    recognizer = StreamingRecognizer(held, settings, "en", end_silence=30.0, background_drafts=True)
    pcm = float_to_pcm16(jfk_samples)
    fed = 0
    while not held.started.is_set() and fed < len(pcm):
        assert not recognizer.feed(pcm[fed : fed + 3200]), "no partial before the first draft is even done"
        fed += 3200
    assert held.started.wait(10), "a draft started while the visitor spoke"
    for start in range(fed, len(pcm), 3200):  # the rest of the speech, while that draft is still blocked
        assert all(not t.final for t in recognizer.feed(pcm[start : start + 3200]))
    final = recognizer.finish()  # the draft is still blocked: the final must not wait for it
    assert final is not None and final.final and "ask not" in final.text.lower()
    assert held.calls[-1] == "final" and not held.release.is_set()
    held.release.set()
    recognizer._draft_thread.join(30)
    assert recognizer.feed(float_to_pcm16(np.zeros(3200, np.float32))) == []  # the old utterance's draft is dropped


@pytest.mark.parametrize(
    "window,multilingual,decode",
    [
        ("auto", False, (FINAL_MARGIN_S, 1)),
        ("auto", True, (MULTILINGUAL_FINAL_MARGIN_S, MULTILINGUAL_FINAL_BEAM)),
        ("short", True, (FINAL_MARGIN_S, 1)),
        ("full", True, (None, 1)),
        ("full", False, (None, 1)),
    ],
)
def test_final_window_and_beam_follow_the_setting_and_the_model(settings, window, multilingual, decode):
    from voiceapp.stt.faster_whisper import FasterWhisperEngine

    engine = FasterWhisperEngine(settings.replace(whisper_final_window=window))  # its own instance: not the cached one
    engine.multilingual = multilingual
    asked: list = []
    engine._recognise = lambda audio, language, margin_s, beam=1: asked.append((margin_s, beam))  # what it asks for
    engine.transcribe(DecodedAudio(samples=np.zeros(16000, dtype=np.float32), sample_rate=16000))
    engine.transcribe_draft(DecodedAudio(samples=np.zeros(16000, dtype=np.float32), sample_rate=16000))
    assert asked == [decode, (DRAFT_MARGIN_S, 1)]  # partials stay greedy in the shortest window
