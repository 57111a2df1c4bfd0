"""Hands-free end of turn (a complete sentence ends at a short pause, one cut mid-way keeps listening), the
speculative final decoded at a pause, and partials that give way under load."""

from __future__ import annotations

from contextlib import ExitStack

import numpy as np
import pytest

from tests.support import piper_take
from voiceapp.audio import decode, float_to_pcm16
from voiceapp.stt.endpoint import TurnDetector, ends_open, get_detector, model_path
from voiceapp.stt.streaming import DecodeLoad, StreamingRecognizer
from voiceapp.stt.wer import wer

RATE = 16_000
FRAME = 1600  # 100 ms
COMPLETE = "Where can I park my car?"
SPLIT = "I was wondering, whether you deliver to my office."
LONG = "Please tell me what time the shop opens on Saturday morning and when it closes on Sunday evening."


@pytest.fixture(scope="module")
def speak(settings):
    return lambda text: decode(piper_take(settings, text).audio, settings).samples


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.float32)


def quiet_gaps(samples: np.ndarray, min_s: float = 0.05) -> list[tuple[int, int]]:
    """(start, end) of stretches quieter than -40 dBFS (20 ms RMS) lasting at least `min_s`."""
    energy = np.sqrt(np.convolve(samples**2, np.ones(320) / 320, mode="same"))
    quiet = np.concatenate([[False], energy < 0.01, [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    return [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=False) if b - a >= min_s * RATE]


def paused_mid_sentence(samples: np.ndarray, pause_s: float) -> tuple[np.ndarray, float]:
    """The sentence with its first inner gap (the comma) stretched to `pause_s`; and where the pause starts."""
    inner = [(a, b) for a, b in quiet_gaps(samples) if 0.15 * samples.size < a < 0.7 * samples.size]
    start, end = inner[0]
    audio = np.concatenate([silence(0.3), samples[:start], silence(pause_s), samples[end:], silence(2.0)])
    return audio, 0.3 + start / RATE


def feed(recognizer: StreamingRecognizer, samples: np.ndarray) -> list[tuple[float, object]]:
    """(seconds of audio fed when it came, transcript) of every result."""
    pcm, out = float_to_pcm16(samples), []
    for start in range(0, len(pcm), FRAME * 2):
        for transcript in recognizer.feed(pcm[start : start + FRAME * 2]):
            out.append(((start + FRAME * 2) / 2 / RATE, transcript))
    return out


def test_ends_open_flags_words_a_sentence_cannot_end_on():
    assert ends_open("I would like to book a table for") and ends_open("My order number is,")
    assert ends_open("Well, um...") and ends_open("Я хотел бы узнать, что")
    assert not ends_open("Where can I park my car?") and not ends_open("Как мне оплатить заказ?")


def test_the_shipped_model_loads_offline(settings):
    assert model_path(settings).name == "smart-turn-v3.2-cpu.onnx"
    detector = get_detector(settings)
    assert isinstance(detector, TurnDetector) and get_detector(settings) is detector
    assert detector.features(silence(1.0)).shape == (80, 800)


def test_model_scores_a_complete_sentence_above_the_same_sentence_cut(settings, speak):
    detector = get_detector(settings)
    complete, cut = [], []
    # Piper's voice varies from one synthesis to the next: the whole sentence scored 0.25-0.97 over runs, the cut
    # one never above 0.03. So no synthesis of the cut sentence may end a turn, and at least one of the whole may.
    for _ in range(3):
        full = speak(SPLIT)
        complete.append(detector.probability(np.concatenate([silence(0.3), full, silence(0.3)])))
        cut.append(detector.probability(np.concatenate([silence(0.3), full[: full.size // 2], silence(0.3)])))
    assert min(complete) > max(cut), (complete, cut)
    assert max(complete) >= settings.endpoint_complete > max(cut), (complete, cut)


def test_complete_sentence_ends_the_turn_at_a_short_pause(engine, settings, speak):
    recognizer = StreamingRecognizer(engine, settings, "en", end_silence=settings.endpoint_silence, smart_endpoint=True)
    speech = speak(COMPLETE)
    results = feed(recognizer, np.concatenate([silence(0.3), speech, silence(2.0)]))
    finals = [(at, t) for at, t in results if t.final]
    assert len(finals) == 1 and wer(COMPLETE, finals[0][1].text) <= 0.2
    pause_at = finals[0][0] - (0.3 + speech.size / RATE)
    # Before the 1.2 s end silence (Piper's own trailing silence is part of the pause).
    assert pause_at < settings.endpoint_silence - 0.2, (pause_at, recognizer.turn_probabilities)
    assert recognizer.early_ends == 1


@pytest.mark.parametrize("pause_s", [0.5, 0.7])
def test_sentence_paused_mid_way_keeps_listening(engine, settings, speak, pause_s):
    recognizer = StreamingRecognizer(engine, settings, "en", end_silence=settings.endpoint_silence, smart_endpoint=True)
    audio, _ = paused_mid_sentence(speak(SPLIT), pause_s)
    finals = [t for _, t in feed(recognizer, audio) if t.final]
    assert len(finals) == 1, [t.text for t in finals]
    assert wer(SPLIT, finals[0].text) <= 0.2, finals[0].text


def test_silence_mode_waits_the_whole_end_silence(engine, settings, speak):
    quiet = settings.replace(endpoint_mode="silence")
    recognizer = StreamingRecognizer(engine, quiet, "en", end_silence=quiet.endpoint_silence, smart_endpoint=True)
    speech = speak(COMPLETE)
    finals = [(at, t) for at, t in feed(recognizer, np.concatenate([silence(0.3), speech, silence(2.0)])) if t.final]
    assert len(finals) == 1
    assert finals[0][0] >= 0.3 + speech.size / RATE + quiet.endpoint_silence - 0.3
    assert recognizer.turn_checks == 0 and recognizer.early_ends == 0


def test_push_to_talk_never_asks_the_model(engine, settings, speak):
    # What the live STT stage builds for push-to-talk: no early end, a pause never ends the utterance.
    recognizer = StreamingRecognizer(engine, settings, "en", end_silence=settings.audio_max_duration + 1)
    results = feed(recognizer, np.concatenate([silence(0.3), speak(COMPLETE), silence(2.0)]))
    assert [t for _, t in results if t.final] == []
    assert recognizer.turn_checks == 0
    assert wer(COMPLETE, recognizer.finish().text) <= 0.2


def test_missing_model_falls_back_to_the_silence_rule(engine, settings, speak, tmp_path, caplog):
    broken = settings.replace(turn_model_path=str(tmp_path / "absent.onnx"))
    assert get_detector(broken) is None
    assert "silence only" in caplog.text
    recognizer = StreamingRecognizer(engine, broken, "en", end_silence=broken.endpoint_silence, smart_endpoint=True)
    speech = speak(COMPLETE)
    finals = [(at, t) for at, t in feed(recognizer, np.concatenate([silence(0.3), speech, silence(2.0)])) if t.final]
    assert len(finals) == 1 and finals[0][0] >= 0.3 + speech.size / RATE + broken.endpoint_silence - 0.3


# ---------------------------------------------------------------- speculative final, partials under load


def push_to_talk(engine, settings, **kwargs) -> StreamingRecognizer:
    """The recognizer the live STT stage builds for a held button: a pause never ends the utterance."""
    return StreamingRecognizer(engine, settings, "en", end_silence=settings.audio_max_duration + 1, **kwargs)


def test_speculative_final_is_reused_when_no_speech_came_after_it(engine, settings, speak):
    recognizer = push_to_talk(engine, settings)
    # The button is still held 0.6 s after the words: the pause is decoded before `end` comes.
    results = feed(recognizer, np.concatenate([silence(0.3), speak(COMPLETE), silence(0.6)]))
    decodes = recognizer.decodes
    final = recognizer.finish()
    assert recognizer.decodes == decodes, "end decoded again although nothing was said after the pause"
    assert final is not None and final.final and wer(COMPLETE, final.text) <= 0.2, final
    assert [t for _, t in results if t.final] == [], "a held button is never ended by a pause"


def test_the_speculation_offered_at_a_pause_is_the_final_when_no_speech_follows(engine, settings, speak):
    # What the live STT task offers for a prepared reply: never mid-speech, and the very words of the final.
    recognizer = push_to_talk(engine, settings)
    speech = speak(COMPLETE)
    feed(recognizer, np.concatenate([silence(0.3), speech[: speech.size // 2]]))
    assert recognizer.speculation is None, "no speculation while the visitor speaks"
    feed(recognizer, np.concatenate([speech[speech.size // 2 :], silence(0.6)]))
    offered = recognizer.speculation
    final = recognizer.finish()
    assert offered is not None and final is not None and not offered.final
    assert offered.text == final.text and wer(COMPLETE, final.text) <= 0.2
    assert recognizer.speculation is None, "an ended utterance offers nothing"


def test_speech_after_a_speculation_withdraws_it(engine, settings, speak):
    recognizer = push_to_talk(engine, settings)
    audio, pause_at = paused_mid_sentence(speak(SPLIT), 0.7)
    resume = int((pause_at + 0.7) * RATE)
    feed(recognizer, audio[:resume])
    assert recognizer.speculation is not None, "the inner pause was decoded speculatively"
    feed(recognizer, audio[resume : resume + int(0.2 * RATE)])
    assert recognizer.speculation is None, "speech after the pause: the speculation no longer holds every word"


def test_speech_after_the_speculation_is_decoded_again(engine, settings, speak):
    recognizer = push_to_talk(engine, settings)
    audio, _ = paused_mid_sentence(speak(SPLIT), 0.7)
    last_word = int(np.flatnonzero(np.abs(audio) > 0.01)[-1])
    spoken = audio[: last_word + int(0.1 * RATE)]  # `end` 0.1 s after the last word: too soon to speculate
    results = feed(recognizer, spoken)
    partial_texts = [t.text for _, t in results]
    decodes = recognizer.decodes
    final = recognizer.finish()
    assert recognizer.decodes == decodes + 1, "the second half was never decoded"
    assert final is not None and wer(SPLIT, final.text) <= 0.2, (final.text, partial_texts)
    # The speculation at the inner pause heard only the first half: it must not be what `end` returns.
    assert "office" in final.text.lower()


def test_partials_give_way_to_other_decodes_but_the_final_does_not(engine, settings, speak):
    load = DecodeLoad()
    recognizer = push_to_talk(engine, settings, load=load)
    speech = np.concatenate([silence(0.3), speak(LONG)])
    # Another visitor's decodes hold every slot of this process while this one speaks.
    with ExitStack() as stack:
        for _ in range(getattr(engine, "decode_slots", 1)):
            stack.enter_context(load.decoding())
        feed(recognizer, speech)
        # Piper's pauses vary: a speculative decode at one may still show its text; no draft decode ran.
        assert recognizer.drafts == 0 and recognizer.skipped_partials >= 1
        final = recognizer.finish()
    assert final is not None and wer(LONG, final.text) <= 0.25, final
    assert load.running == 0


def test_audio_that_waited_gets_no_partial_but_still_its_final(engine, settings, speak):
    recognizer = push_to_talk(engine, settings)
    pcm = float_to_pcm16(np.concatenate([silence(0.3), speak(LONG)]))
    for start in range(0, len(pcm), FRAME * 2):
        # The worker is 2 s behind this utterance (it waited in the queue): partials would describe the past.
        recognizer.feed(pcm[start : start + FRAME * 2], lag=2.0)
    assert recognizer.drafts == 0 and recognizer.skipped_partials >= 1
    final = recognizer.finish()
    assert final is not None and wer(LONG, final.text) <= 0.25, final


def test_partials_come_when_the_worker_keeps_up(engine, settings, speak):
    recognizer = push_to_talk(engine, settings, load=DecodeLoad())
    results = feed(recognizer, np.concatenate([silence(0.3), speak(LONG)]))
    assert [t for _, t in results if not t.final], "no partial while idle"
    assert recognizer.drafts >= 1 and recognizer.skipped_partials == 0
