"""Test utterances: the real recordings and Piper-synthesized questions, as 16 kHz PCM16 with their speech end."""

from __future__ import annotations

import wave
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
LEAD_SILENCE = 0.3  # seconds before speech: a microphone opens before the visitor speaks


@dataclass(frozen=True)
class Utterance:
    """16 kHz mono PCM16 audio, where its speech ends, and what kind of speech it is."""

    name: str
    kind: str  # "recording" or "synthesized"
    pcm: bytes
    speech_end_s: float

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


def _utterance(name: str, kind: str, samples: np.ndarray) -> Utterance:
    samples = np.concatenate([np.zeros(int(LEAD_SILENCE * RATE), np.float32), samples.astype(np.float32)])
    return Utterance(name=name, kind=kind, pcm=float_to_pcm16(samples), speech_end_s=speech_end(samples))


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
        out.append(_utterance("jfk", "recording", decode((SHARED / "jfk.flac").read_bytes(), settings).samples))
    left, right = _wav_channels(SHARED / "librispeech_stereo.wav")
    if "librispeech_left" in names:
        out.append(_utterance("librispeech_left", "recording", left))
    if "librispeech_right" in names:
        out.append(_utterance("librispeech_right", "recording", right))
    return out


def synthesized(settings: Settings, count: int = len(QUESTIONS)) -> list[Utterance]:
    """Questions about the demo knowledge base spoken by the local Piper voice."""
    from voiceapp.tts.registry import get_provider

    provider = get_provider(settings, "piper")
    out: list[Utterance] = []
    for i, text in enumerate(QUESTIONS[:count]):
        audio = decode(provider.synthesize(text, None, None).audio, settings).samples
        out.append(_utterance(f"q{i + 1}", "synthesized", audio))
    return out
