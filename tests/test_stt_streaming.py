"""Streaming recognition of PCM16 frames with Silero VAD end-of-utterance detection."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from voiceapp.audio import decode, float_to_pcm16, resample
from voiceapp.config import Settings
from voiceapp.errors import AudioError
from voiceapp.stt import get_engine
from voiceapp.stt.streaming import StreamingRecognizer
from voiceapp.stt.wer import wer
from voiceapp.tts.piper import DEMO_PATH, DEMO_TEXT

DATA = Path("/work/shared/data")
LIBRI_LEFT = "He began a confused complaint against the wizard, who had vanished behind the curtain on the left."
JFK_TEXT = (
    "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
)
FRAME = 1600  # 100 ms at 16 kHz, like the widget's frames


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings.from_env({})


@pytest.fixture(scope="module")
def engine(settings):
    return get_engine(settings)


@pytest.fixture(scope="module")
def libri() -> np.ndarray:
    with wave.open(str(DATA / "librispeech_stereo.wav")) as reader:
        pcm = np.frombuffer(reader.readframes(reader.getnframes()), "<i2").reshape(-1, 2)
    return (pcm[:, 0] / 32768.0).astype(np.float32)


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
    assert wer(LIBRI_LEFT, final.text) <= 0.15
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
    assert wer(LIBRI_LEFT, finals[0]) <= 0.15
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


def test_odd_frame_is_refused(engine, settings):
    recognizer = StreamingRecognizer(engine, settings, "en")
    with pytest.raises(AudioError):
        recognizer.feed(b"\x00\x01\x02")


def test_long_utterance_is_committed_in_pieces(engine, settings):
    jfk = decode((DATA / "jfk.flac").read_bytes(), settings).samples
    # Few partials: this test is about the commit, and each decode costs a 30 s window.
    recognizer = StreamingRecognizer(engine, settings.replace(audio_chunk_duration=8.0), "en", end_silence=1.6)
    results = feed_all(recognizer, np.concatenate([jfk, jfk, jfk, silence(2.0)]))
    finals = [t for _, t in results if t.final]
    assert len(finals) == 1
    assert recognizer.commits >= 1 and len(finals[0].text.split()) > 50
    assert wer(" ".join([JFK_TEXT] * 3), finals[0].text) <= 0.2
