"""Live recognition of PCM16 frames: partial transcripts while the visitor speaks, a final one at the pause.

Each partial re-transcribes the whole utterance with the engine's cheap draft mode (a short encoder
window for Whisper). When the visitor pauses, the utterance is decoded speculatively before the
end-of-speech timeout; if no speech follows, that result becomes the final transcript with no decode
after the stop. Hands-free, the pause also asks the end-of-turn model (voiceapp.stt.endpoint): when it
judges the turn complete and the words do not stop mid-phrase, the utterance ends at that short pause
instead of after the whole end silence (which stays the upper bound).
Utterances longer than COMMIT_AFTER seconds are committed in pieces to keep each decode bounded.

Under load partials give way, never finals: a partial is skipped while every decode slot of this process is
busy (it would queue behind other visitors' decodes) or while the audio being fed waited longer than
PARTIAL_MAX_LAG (the worker is behind real time, so the partial would describe the past and delay the end).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from voiceapp.audio import StreamResampler, pcm16_to_float
from voiceapp.config import Settings
from voiceapp.models import DecodedAudio, Transcript
from voiceapp.stt.base import SttEngine
from voiceapp.stt.endpoint import ends_sentence, get_detector

VAD_RATE = 16_000
WINDOW = 512  # Silero VAD frame at 16 kHz (32 ms)
THRESHOLD = 0.5  # speech probability that opens (or continues) speech
PRE_ROLL = 0.3  # seconds kept before the first speech frame: word onsets are soft
END_PAD = 0.2  # seconds kept after the last speech frame
SPECULATE_AFTER = 0.3  # seconds of pause before decoding the utterance speculatively
END_SILENCE = 1.2  # seconds of pause that end the utterance (speakers pause ~1 s mid-sentence)
MIN_SPEECH = 0.25  # seconds of speech below which a "voice" is a click or a cough
COMMIT_AFTER = 20.0  # seconds of utterance after which a prefix is committed
BACKLOG_FACTOR = 2.0  # partials wait at least this many times the last decode's wall time
PARTIAL_MAX_LAG = 0.5  # seconds audio may wait before being fed; older audio gets no partial


class DecodeLoad:
    """Decodes running now in this process (every utterance's recognizer shares one count)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0

    @contextmanager
    def decoding(self) -> Iterator[None]:
        """Count one decode for the duration of the block."""
        with self._lock:
            self.running += 1
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1

    def busy(self, slots: int) -> bool:
        """Whether `slots` decodes already run: one more would wait for a slot."""
        return self.running >= max(1, slots)


DECODES = DecodeLoad()


def _vad_model():
    """Silero VAD as shipped inside faster-whisper (loaded once per process)."""
    from faster_whisper.vad import get_vad_model

    return get_vad_model()


class StreamingRecognizer:
    """Feed PCM16 mono frames; get partial transcripts and, after each pause, a final one."""

    def __init__(
        self,
        engine: SttEngine,
        settings: Settings,
        language: str | None = None,
        *,
        sample_rate: int | None = None,
        end_silence: float = END_SILENCE,
        smart_endpoint: bool = False,
        load: DecodeLoad | None = None,
        background_drafts: bool = False,
    ) -> None:
        self.engine = engine
        self.language = language
        self.input_rate = sample_rate or settings.audio_sample_rate
        self._resampler = StreamResampler(self.input_rate, VAD_RATE) if self.input_rate != VAD_RATE else None
        self.partial_every = int(settings.audio_chunk_duration * VAD_RATE)
        self.max_samples = int(settings.audio_max_duration * VAD_RATE)
        self.end_silence = int(end_silence * VAD_RATE)
        # The caller says whether a pause may end the turn early (hands-free); AUDIO_ENDPOINT_MODE whether it does.
        self._detector = get_detector(settings) if smart_endpoint and settings.endpoint_mode == "smart" else None
        self.min_silence = int(settings.endpoint_min_silence * VAD_RATE)
        self.complete_threshold = settings.endpoint_complete
        self.turn_checks = 0  # end-of-turn model calls (for measurement)
        self.early_ends = 0  # utterances ended at a short pause by the model
        self.turn_probabilities: list[float] = []
        self._vad = _vad_model()
        self.decodes = 0  # how many times the engine ran (for measurement)
        self.decoded_seconds = 0.0
        self.commits = 0  # prefixes of long utterances fixed early
        self._decode_cost = 0.0  # wall seconds of the last decode
        self._load = load or DECODES
        self._slots = int(getattr(engine, "decode_slots", 1) or 1)
        self._lag = 0.0  # seconds the audio of the latest feed waited before it came
        self.skipped_partials = 0  # partials given up under load (for measurement)
        self.drafts = 0  # partial (draft) decodes run
        # Live turns decode drafts on a thread of their own, so the final never waits for a draft in flight.
        self._background = background_drafts
        self._draft_lock = threading.Lock()
        self._draft_thread: threading.Thread | None = None
        self._draft_done: tuple[int, int, Transcript] | None = None  # (utterance, end, draft) not yet emitted
        self._utterance = 0  # bumped at every reset: a late draft of an ended utterance is dropped
        self._reset(np.zeros(0, dtype=np.float32))

    def _reset(self, keep: np.ndarray) -> None:
        """Start a new utterance with `keep` as the already-buffered audio."""
        self._utterance += 1
        self._buffer = keep
        self._vad_pos = 0  # samples of _buffer already scored by the VAD
        self._start: int | None = None  # start of the part still to decode (with pre-roll)
        self._origin = 0  # start of the whole utterance
        self._speech_end = 0
        self._voiced = 0  # samples scored as speech in this utterance
        self._probs: list[float] = []
        self._last_partial_at = 0
        self._last_partial_text = ""
        self._speculative: tuple[int, Transcript] | None = None
        self._committed: list[str] = []
        self._judged_at = -1  # speech end of the pause the end-of-turn model last judged

    # -- public API -------------------------------------------------------------------------

    def feed(self, pcm: bytes, lag: float = 0.0) -> list[Transcript]:
        """Add PCM16 frames that waited `lag` seconds; returns new partials and at most one final transcript."""
        self._lag = lag
        samples = pcm16_to_float(pcm)
        if self._resampler is not None:
            samples = self._resampler.push(samples)
        self._buffer = np.concatenate([self._buffer, samples])
        self._score_new_windows()
        if self._start is None:
            self._drop_leading_silence()
            return []
        ready = self._finished_draft()
        return ready + self._advance()

    def finish(self) -> Transcript | None:
        """End the utterance now (visitor pressed stop): the final transcript, or None if no speech."""
        if self._start is None or self._voiced < MIN_SPEECH * VAD_RATE:
            self._reset(np.zeros(0, dtype=np.float32))
            return None
        end = len(self._buffer)
        final = self._final(end)
        self._reset(np.zeros(0, dtype=np.float32))
        return final

    @property
    def in_speech(self) -> bool:
        """Whether an utterance has started and not ended yet."""
        return self._start is not None

    @property
    def speculation(self) -> Transcript | None:
        """At a pause, the final-quality decode of every word so far: the final transcript if no speech follows."""
        spec = self._speculative
        paused = self._vad_pos - self._speech_end >= SPECULATE_AFTER * VAD_RATE
        if self._start is None or spec is None or not paused or not self._covers_speech():
            return None
        text = self._joined(spec[1].text)
        return dataclasses.replace(spec[1], text=text, final=False) if text else None

    # -- internals --------------------------------------------------------------------------

    def _score_new_windows(self) -> None:
        """Run Silero VAD on complete new 32 ms windows and update the speech markers."""
        count = (len(self._buffer) - self._vad_pos) // WINDOW
        if count <= 0:
            return
        begin = self._vad_pos
        # One window of history gives the model its context; its own score is discarded.
        history = WINDOW if begin >= WINDOW else 0
        # A copy: faster-whisper's Silero wrapper zeroes part of the array it is given.
        chunk = self._buffer[begin - history : begin + count * WINDOW].copy()
        probs = np.asarray(self._vad(chunk)).reshape(-1)[history // WINDOW :]
        for i, prob in enumerate(probs[:count]):
            window_start = begin + i * WINDOW
            self._probs.append(float(prob))
            if prob >= THRESHOLD:
                if self._start is None:
                    self._start = self._origin = max(window_start - int(PRE_ROLL * VAD_RATE), 0)
                    self._last_partial_at = self._start
                self._speech_end = window_start + WINDOW
                self._voiced += WINDOW
        self._vad_pos = begin + count * WINDOW

    def _drop_leading_silence(self) -> None:
        """Before speech, keep only the pre-roll so idle listening uses constant memory."""
        keep = int(PRE_ROLL * VAD_RATE) // WINDOW * WINDOW
        excess = self._vad_pos - keep
        if excess > 0:
            self._buffer = self._buffer[excess:]
            self._vad_pos -= excess
            self._probs = []

    def _advance(self) -> list[Transcript]:
        """Decide whether this moment needs a partial, a speculative decode, a commit or a final."""
        silence = self._vad_pos - self._speech_end
        if silence >= self.end_silence:
            return self._end_of_utterance()
        if self._vad_pos - self._origin > self.max_samples:
            return self._end_of_utterance()
        if self._detector is not None and silence >= self.min_silence and self._judged_at != self._speech_end:
            return self._judge_turn()
        if silence >= SPECULATE_AFTER * VAD_RATE:
            return self._speculate()
        if self._vad_pos - self._begin > COMMIT_AFTER * VAD_RATE:
            self._commit()
            return []
        # On a busy CPU partials thin out so recognition keeps up with real time.
        interval = max(self.partial_every, int(BACKLOG_FACTOR * self._decode_cost * VAD_RATE))
        if self._vad_pos - self._last_partial_at < interval:
            return []
        if self._lag > PARTIAL_MAX_LAG or self._load.busy(self._slots):
            # Behind real time, or every decode slot taken: a partial now would only delay someone's final.
            self.skipped_partials += 1
            self._last_partial_at = self._vad_pos
            return []
        return self._partial(self._vad_pos)

    def _judge_turn(self) -> list[Transcript]:
        """At a short pause: decode what was said, then end the utterance if the turn sounds complete."""
        out = self._speculate()
        self._judged_at = self._speech_end
        if not self._turn_complete():
            return out
        self.early_ends += 1
        return out + self._end_of_utterance()

    def _turn_complete(self) -> bool:
        """The words read as a finished sentence and the model, hearing the prosody, judges the turn complete."""
        detector = self._detector
        if self._voiced < MIN_SPEECH * VAD_RATE or self._speculative is None or detector is None:
            return False
        if not ends_sentence(self._joined(self._speculative[1].text)):
            return False
        self.turn_checks += 1
        probability = detector.probability(self._buffer[self._origin : self._vad_pos])
        self.turn_probabilities.append(round(probability, 3))
        return probability >= self.complete_threshold

    @property
    def _begin(self) -> int:
        """Start of the part still to decode; read only while an utterance is under way."""
        assert self._start is not None, "no utterance under way"
        return self._start

    def _end_of_utterance(self) -> list[Transcript]:
        """Close the utterance; speech too short to be words gives nothing."""
        rest = self._buffer[self._vad_pos :]
        final = None
        if self._voiced >= MIN_SPEECH * VAD_RATE:
            final = self._final(min(self._speech_end + int(END_PAD * VAD_RATE), self._vad_pos))
        self._reset(rest)
        self._score_new_windows()
        return [final] if final is not None else []

    def _final(self, end: int) -> Transcript | None:
        """The final transcript, reusing the speculative decode when no speech came after it."""
        spec = self._speculative
        current = spec[1] if spec is not None and self._covers_speech() else self._decode(self._begin, end)
        text = self._joined(current.text)
        if not text:
            return None
        return dataclasses.replace(current, text=text, final=True)

    def _speculate(self) -> list[Transcript]:
        """Decode the utterance up to the pause once, before the end-of-speech timeout expires."""
        if self._covers_speech():
            return []
        end = min(self._speech_end + int(END_PAD * VAD_RATE), self._vad_pos)
        self._last_partial_at = self._vad_pos
        return self._emit_partial(self._decode(self._begin, end))

    def _covers_speech(self) -> bool:
        """Whether the latest decode already heard every speech frame of the utterance."""
        if self._speculative is None:
            return False
        needed = min(self._speech_end + int(END_PAD * VAD_RATE), len(self._buffer))
        return self._speculative[0] >= needed

    def _partial(self, end: int) -> list[Transcript]:
        """Re-decode the whole utterance so far as a partial transcript."""
        self._last_partial_at = end
        if self._background:
            self._start_draft(self._begin, end)
            return []
        self.drafts += 1
        return self._emit_partial(self._decode(self._begin, end, draft=True))

    def _start_draft(self, start: int, end: int) -> None:
        """Decode a draft on its own thread; one at a time per utterance (a newer one waits for the next chance)."""
        if self._draft_thread is not None and self._draft_thread.is_alive():
            self.skipped_partials += 1
            return
        self.drafts += 1
        samples, utterance = self._buffer[start:end].copy(), self._utterance
        self._draft_thread = threading.Thread(
            target=self._run_draft, args=(samples, utterance, end), name="stt-draft", daemon=True
        )
        self._draft_thread.start()

    def _run_draft(self, samples: np.ndarray, utterance: int, end: int) -> None:
        """The draft thread: decode, then leave the result for the next feed to emit."""
        try:
            transcript = self._transcribe(samples, draft=True)
        except Exception:  # noqa: BLE001 - a failed draft costs one partial; the final decodes on its own
            return
        with self._draft_lock:
            self._draft_done = (utterance, end, transcript)

    def _finished_draft(self) -> list[Transcript]:
        """A draft finished since the last feed, as a partial, unless a newer decode already said more."""
        with self._draft_lock:
            done, self._draft_done = self._draft_done, None
        if done is None or done[0] != self._utterance:
            return []
        spec = self._speculative
        if spec is not None and spec[0] >= done[1]:
            return []  # a final-quality decode of at least this much audio came first
        return self._emit_partial(done[2])

    def _emit_partial(self, transcript: Transcript) -> list[Transcript]:
        """A partial, only when there is text and it changed."""
        text = self._joined(transcript.text)
        if not text or text == self._last_partial_text:
            return []
        self._last_partial_text = text
        return [dataclasses.replace(transcript, text=text, final=False)]

    def _commit(self) -> None:
        """Fix the text of a long utterance's first part, cut at its quietest recent moment."""
        look_back = min(len(self._probs), int(3 * VAD_RATE) // WINDOW)
        recent = self._probs[-look_back:] if look_back else [0.0]
        quietest = len(self._probs) - look_back + int(np.argmin(recent))
        cut = max(self._vad_pos - (len(self._probs) - quietest) * WINDOW, self._begin + WINDOW)
        text = self._decode(self._begin, cut).text.strip()
        if text:
            self._committed.append(text)
        self.commits += 1
        self._start = cut
        self._speculative = None

    def _decode(self, start: int, end: int, draft: bool = False) -> Transcript:
        """Run the engine on buffer[start:end]; a draft (partial) may use the engine's cheaper mode."""
        samples = self._buffer[start:end]
        self.decodes += 1
        self.decoded_seconds += len(samples) / VAD_RATE
        transcript = self._transcribe(samples, draft)
        # A final-quality decode is remembered so a pause right after it needs no new decode; a draft never
        # becomes the final transcript.
        drafted = draft and getattr(self.engine, "transcribe_draft", None) is not None
        self._speculative = None if drafted else (end, transcript)
        return transcript

    def _transcribe(self, samples: np.ndarray, draft: bool) -> Transcript:
        """One engine call (its cheaper draft mode when asked and offered), counted in the decode load and timed."""
        began = time.monotonic()
        audio = DecodedAudio(samples=samples, sample_rate=VAD_RATE)
        transcribe = getattr(self.engine, "transcribe_draft", None) if draft else None
        with self._load.decoding():
            transcript = (transcribe or self.engine.transcribe)(audio, self.language)
        self._decode_cost = time.monotonic() - began
        return transcript

    def _joined(self, text: str) -> str:
        """Committed prefix + the current text."""
        return " ".join(part for part in [*self._committed, text.strip()] if part).strip()
