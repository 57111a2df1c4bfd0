"""Small frozen values passed between the stages of a turn."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class DecodedAudio:
    """Mono float32 samples in [-1, 1] at `sample_rate`."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / float(self.sample_rate)


@dataclass(frozen=True)
class Transcript:
    """What a recognition engine heard."""

    text: str
    language: str | None = None
    confidence: float | None = None
    engine: str = ""
    model: str = ""
    final: bool = True


@dataclass(frozen=True)
class Passage:
    """One section of a project's knowledge base."""

    project: str
    source: str
    section: str
    text: str
    score: float = 0.0


@dataclass(frozen=True)
class Reply:
    """What the assistant answers, with where the answer came from."""

    text: str
    intent: str
    confidence: float
    sources: tuple[str, ...] = ()
    suggested_actions: tuple[dict, ...] = ()


@dataclass(frozen=True)
class Synthesis:
    """Audio of one reply (or one sentence of it)."""

    audio: bytes
    mime_type: str
    provider: str
    voice: str
    sample_rate: int | None = None
    duration: float | None = None
    extra: dict = field(default_factory=dict)
