"""Short encoder windows for Whisper: how long a window is, and when its decode must not be trusted.

faster-whisper pads every input to Whisper's 30 s window; a window of the clip's own length plus a margin
costs a fraction of that, but a short window sometimes makes the model loop, restart or drop the sentence.
"""

from __future__ import annotations

import math

from voiceapp.stt.filters import with_text, word_key

WHISPER_RATE = 16_000

FULL_WINDOW_S = 30  # Whisper's training window: faster-whisper pads every input to it
# Seconds of silence after the clip inside a short encoder window (the clip rounded up to whole seconds + this).
# Measured on the repository's 23 clips (tests/data + Piper questions, tiny.en): +1 s changed one word of 187
# against the stock 30 s window, +3 s none; partials take the cheaper one, finals the one that costs no accuracy.
DRAFT_MARGIN_S = 1
FINAL_MARGIN_S = 3
# Multilingual finals (WHISPER_FINAL_WINDOW=auto), measured by bench/stt_windows.py on 21 Russian clips (base):
# greedy in a short window misheard words the stock 30 s window got right ("субботу"), but beam 5 in the
# clip + 3 s window makes fewer errors than the stock greedy decode at a fraction of its encoder time.
MULTILINGUAL_FINAL_MARGIN_S = 3
MULTILINGUAL_FINAL_BEAM = 5


def window_frames(samples: int, margin_s: int) -> int | None:
    """Encoder frames (100 per second) of a short window: the clip rounded up to whole seconds + a margin.

    None when that reaches Whisper's 30 s: the clip is decoded exactly as stock faster-whisper does.
    """
    seconds = math.ceil(samples / WHISPER_RATE) + margin_s
    return seconds * 100 if seconds < FULL_WINDOW_S else None


MAX_WORDS_PER_SECOND = 5.0  # faster than anyone speaks: the decoder is repeating itself


TOKENS_PER_SECOND = 8  # speech is ~4 tokens/s; past twice that a decode is looping


def token_budget(samples: int) -> int:
    """Most tokens a short-window decode may produce for a clip of `samples`."""
    return int(TOKENS_PER_SECOND * samples / WHISPER_RATE) + 10


def short_window_failed(segments: list, duration_s: float) -> bool:
    """Whether a short-window decode looks wrong: no words, a repeated phrase, or more words than time allows."""
    words = " ".join((getattr(s, "text", "") or "").strip() for s in segments).split()
    if not words:
        return True
    if len(words) > MAX_WORDS_PER_SECOND * max(duration_s, 1.0):
        return True
    return _repeats_phrase([word_key(w) for w in words])


SENTENCE_END = (".", "?", "!", "…")


def restart_cut(segments: list) -> list | None:
    """A short-window decode that said the sentence, then began it again: the segments cut before the restart.

    Past the end of the clip a short window still holds silence, and tiny models often start the clip over
    there ("Where can I park my car? Where can I park my car"); the first sentence is what the stock window
    hears, so it is kept without a second, 30 s decode. None when the decode is not exactly that.
    """
    if len(segments) != 1:
        return None
    words = (getattr(segments[0], "text", "") or "").split()
    keys = [w.lower().strip(".,!?;:\"'…") for w in words]
    for cut in range(1, len(words) - 1):
        # The restart follows a sentence end, and everything after it repeats the sentence (once or more, the
        # last copy cut short by the token budget): at least 2 words of it.
        if words[cut - 1].endswith(SENTENCE_END) and all(keys[i] == keys[i - cut] for i in range(cut, len(keys))):
            return [with_text(segments[0], " " + " ".join(words[:cut]))]
    return None


def _repeats_phrase(words: list[str], min_size: int = 3) -> bool:
    """A phrase of >= `min_size` words said twice back to back ("where can i ... where can i ...")."""
    for size in range(min_size, len(words) // 2 + 1):
        for i in range(len(words) - 2 * size + 1):
            if words[i : i + size] == words[i + size : i + 2 * size]:
                return True
    return False
