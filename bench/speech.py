"""Test utterances: the real recordings and Piper-synthesized questions, as 16 kHz PCM16 with their speech end."""

from __future__ import annotations

import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voiceapp.audio import decode, float_to_pcm16, resample, to_wav
from voiceapp.config import Settings

RATE = 16_000
SHARED = Path(__file__).resolve().parents[1] / "tests" / "data"  # the real recordings (see its README)
QUESTIONS = (
    "What time do you open on Saturday?",
    "How much does a cappuccino cost?",
    "Where can I park my car?",
    "Do you deliver to my office?",
    "Is there free wifi in the shop?",
    "Are dogs allowed inside?",
)
# The talking scenario's visitors ask QUESTIONS and these in turn: as many different replies as the knowledge base
# has sections, so replies keep missing the synthesis cache through a step, as different visitors' questions do.
MORE_TALK_QUESTIONS = (
    "When do you open on Sunday?",
    "What time do you close on weekdays?",
    "Are you open on public holidays?",
    "What is your address?",
    "Which metro station is nearest?",
    "Is the shop accessible by wheelchair?",
    "How much does a pot of tea cost?",
    "How much are the croissants?",
    "How much is a bag of coffee beans?",
    "What is your phone number?",
    "Do you take credit cards?",
    "Can you cater an office event?",
    "When do you roast your beans?",
)
TAKE_SEED = 0  # fixed once, never chosen by the figures it gives
LEAD_SILENCE = 0.3  # seconds before speech: a microphone opens before the visitor speaks
REFERENCES = {
    "jfk": "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your "
    "country.",
    "librispeech_left": "He began a confused complaint against the wizard, who had vanished behind the curtain on "
    "the left.",
    "librispeech_right": "The horizon seems extremely distant.",
}
# Sentences spoken with a pause inside (at the comma, stretched to PAUSES): a hands-free endpoint must not cut them.
PAUSED = (
    "I was wondering, whether you deliver to my office.",
    "Could you tell me, what time you open on Saturday?",
    "My order number is four five six, and it has not arrived yet.",
    "I would like to know, how much a large cappuccino costs.",
    "If I come by car, where can I park?",
    "Before I order, do you have gluten free pastries?",
    "When I visited last week, the wifi was not working.",
    "Can you check, whether my parcel has been sent?",
    "I bought a coffee machine, and it stopped working.",
    "For a group of six people, do I need to book a table?",
    "Tell me please, are dogs allowed inside?",
    "Actually, I wanted to ask about your opening hours.",
)
PAUSES = (0.4, 0.5, 0.6, 0.7)


@dataclass(frozen=True)
class Utterance:
    """16 kHz mono PCM16 audio, where its speech ends, and what kind of speech it is."""

    name: str
    kind: str  # "recording", "synthesized" or "paused"
    pcm: bytes
    speech_end_s: float
    text: str = ""  # what was said (for word error rates)
    pause_s: float = 0.0  # "paused": the silence inside the sentence

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / RATE

    def wav(self) -> bytes:
        """The same audio as a WAV file (for the HTTP upload path)."""
        return to_wav(np.frombuffer(self.pcm, "<i2").astype(np.float32) / 32768.0, RATE)

    def speech_pcm(self) -> bytes:
        """The audio up to the end of speech (what push-to-talk sends)."""
        return self.pcm[: int(self.speech_end_s * RATE) * 2]


def speech_end(samples: np.ndarray) -> float:
    """Seconds from the start to the end of the last speech segment (Silero VAD, no padding)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    segments = get_speech_timestamps(samples, VadOptions(min_silence_duration_ms=300, speech_pad_ms=0))
    if not segments:
        return len(samples) / RATE
    return round(segments[-1]["end"] / RATE, 3)


def _utterance(name: str, kind: str, samples: np.ndarray, text: str = "", pause_s: float = 0.0) -> Utterance:
    samples = np.concatenate([np.zeros(int(LEAD_SILENCE * RATE), np.float32), samples.astype(np.float32)])
    return Utterance(
        name=name, kind=kind, pcm=float_to_pcm16(samples), speech_end_s=speech_end(samples), text=text, pause_s=pause_s
    )


def _wav_channels(path: Path) -> list[np.ndarray]:
    """Each channel of a PCM16 WAV, resampled to 16 kHz."""
    with wave.open(str(path)) as handle:
        rate, channels = handle.getframerate(), handle.getnchannels()
        data = np.frombuffer(handle.readframes(handle.getnframes()), "<i2").astype(np.float32) / 32768.0
    out = [data[i::channels] for i in range(channels)]
    return [resample(c, rate, RATE) if rate != RATE else c for c in out]


def recordings(
    settings: Settings, names: tuple[str, ...] = ("jfk", "librispeech_left", "librispeech_right")
) -> list[Utterance]:
    """The real recordings of tests/data (the two LibriSpeech readers are one channel each)."""
    out: list[Utterance] = []
    if "jfk" in names:
        jfk = decode((SHARED / "jfk.flac").read_bytes(), settings).samples
        out.append(_utterance("jfk", "recording", jfk, REFERENCES["jfk"]))
    left, right = _wav_channels(SHARED / "librispeech_stereo.wav")
    for name, samples in (("librispeech_left", left), ("librispeech_right", right)):
        if name in names:
            out.append(_utterance(name, "recording", samples, REFERENCES[name]))
    return out


def fix_takes(seed: int = TAKE_SEED) -> None:
    """Seed Piper's noise before its voice loads, so every run speaks the same takes of the questions.

    Piper draws random noise per synthesis: unseeded, each run heard different takes of the same sentences, and the
    end-of-turn model's score of one question ranged 0.32-0.95 over four takes, which moved hands-free figures
    between runs more than any change did.
    """
    import onnxruntime

    onnxruntime.set_seed(seed)


def synthesized(settings: Settings, texts: Sequence[str] = QUESTIONS, prefix: str = "q") -> list[Utterance]:
    """Questions about the demo knowledge base spoken by the local Piper voice (q1, q2, ... in order)."""
    from voiceapp.tts.registry import get_provider

    provider = get_provider(settings, "piper")
    out: list[Utterance] = []
    for i, text in enumerate(texts):
        audio = decode(provider.synthesize(text, None, None).audio, settings).samples
        out.append(_utterance(f"{prefix}{i + 1}", "synthesized", audio, text))
    return out


def _inner_gap(samples: np.ndarray) -> tuple[int, int]:
    """The first quiet stretch (20 ms RMS < -40 dBFS, >= 30 ms) in the middle of a sentence, else its quietest point."""
    energy = np.sqrt(np.convolve(samples**2, np.ones(320) / 320, mode="same"))
    quiet = np.concatenate([[False], energy < 0.01, [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    low, high = 0.15 * samples.size, 0.75 * samples.size
    gaps = [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=False) if b - a >= 0.03 * RATE and low < a < high]
    if gaps:
        return gaps[0]
    middle = int(low) + int(np.argmin(energy[int(low) : int(high)]))
    return middle, middle


def paused(settings: Settings, count: int = len(PAUSED)) -> list[Utterance]:
    """Piper sentences with a natural pause inside: the comma's gap stretched to 0.4-0.7 s."""
    from voiceapp.tts.registry import get_provider

    provider = get_provider(settings, "piper")
    out: list[Utterance] = []
    for i, text in enumerate(PAUSED[:count]):
        audio = decode(provider.synthesize(text, None, None).audio, settings).samples
        start, end = _inner_gap(audio)
        pause = PAUSES[i % len(PAUSES)]
        audio = np.concatenate([audio[:start], np.zeros(int(pause * RATE), np.float32), audio[end:]])
        out.append(_utterance(f"p{i + 1}", "paused", audio, text, pause))
    return out
