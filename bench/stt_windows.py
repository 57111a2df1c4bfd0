"""Which encoder window and decoding options for final transcripts: WER and time per candidate (issue 14).

`python -m bench.stt_windows [--language ru|en] [--threads N] [--json FILE]` prints one table row per
candidate: the encoder window (Whisper's stock 30 s, the clip + 1/2/3/5 s, a fixed 10/15 s), how the window
past the clip is filled (faster-whisper's zero features, or the log-mel of real silence as OpenAI's Whisper
pads), greedy or beam 5, with or without timestamp tokens, with or without an initial prompt.

Each clip is encoded once per window and every decoding candidate runs on that one encoder output (the
encoder is the cost that the window changes; the decoder is what the options change), so the columns
give both. Clips are cut as the live recognizer cuts an utterance (0.3 s before the first speech, 0.2 s
after the last). Russian: the recordings of tests/data/ru, the demo question and EXTRA_RU spoken by
festival (multilingual base); English: jfk, the two LibriSpeech readers and Piper questions (tiny.en).
"fallback" columns apply the engine's check (a short-window decode that looks wrong is redone with the
stock window). Times are medians over clips and depend on the machine's load: compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voiceapp.audio import decode
from voiceapp.config import Settings
from voiceapp.stt.faster_whisper import decode_budget, resolve_model
from voiceapp.stt.short_window import FULL_WINDOW_S, WHISPER_RATE, short_window_failed, token_budget
from voiceapp.stt.wer import word_errors

ROOT = Path(__file__).resolve().parents[1]
RU_DIR = ROOT / "tests" / "data" / "ru"
# More Russian questions for a corpus large enough that one word is not 4 % of it (spoken by festival at run time).
EXTRA_RU = (
    "Вы работаете в субботу и в воскресенье?",
    "Можно ли оплатить заказ картой?",
    "Сколько стоит большой латте?",
    "Есть ли у вас вегетарианские блюда?",
    "Как добраться до вашей кофейни от метро?",
    "Можно ли прийти с собакой?",
    "Во сколько вы закрываетесь в пятницу?",
    "Доставляете ли вы заказы в офис?",
    "У вас есть бесплатный интернет?",
    "Я хочу забронировать столик на шесть человек.",
    "Сколько времени занимает доставка?",
    "Какой у вас номер телефона?",
    "Где можно оставить машину рядом с вами?",
    "Есть ли скидки для студентов?",
)
PROMPTS = {"ru": "Вопрос посетителя.", "en": "A visitor's question."}
PRE_ROLL_S, END_PAD_S = 0.3, 0.2  # what voiceapp.stt.streaming keeps around the speech
BEAMS = (1, 5)


@dataclass(frozen=True)
class Window:
    """An encoder window: `margin` seconds past the clip (rounded up), or `fixed` seconds, or Whisper's 30 s."""

    label: str
    margin: int | None = None
    fixed: int | None = None

    def frames(self, samples: int) -> int:
        """Encoder frames for a clip of `samples` (never shorter than the clip, never past 30 s)."""
        clip_s = int(np.ceil(samples / WHISPER_RATE))
        if self.margin is not None:
            seconds = clip_s + self.margin
        elif self.fixed is not None:
            seconds = max(self.fixed, clip_s + 1)
        else:
            seconds = FULL_WINDOW_S
        return min(seconds, FULL_WINDOW_S) * 100


WINDOWS = (
    Window("30 s (stock)"),
    Window("clip+1 s", margin=1),
    Window("clip+2 s", margin=2),
    Window("clip+3 s", margin=3),
    Window("clip+5 s", margin=5),
    Window("fixed 10 s", fixed=10),
    Window("fixed 15 s", fixed=15),
)
PADS = ("zeros", "silence")  # how the window past the clip is filled


@dataclass(frozen=True)
class Decoder:
    """Decoding options run on one encoder output."""

    beam: int
    timestamps: bool
    prompt: bool

    @property
    def label(self) -> str:
        parts = ["greedy" if self.beam == 1 else f"beam {self.beam}", "timestamps" if self.timestamps else "no ts"]
        return ", ".join(parts + (["prompt"] if self.prompt else []))


DECODERS = tuple(Decoder(b, t, p) for b in BEAMS for t in (False, True) for p in (False, True))
PRODUCTION = Decoder(1, False, False)  # what voiceapp.stt.faster_whisper decodes with


@dataclass
class Clip:
    """One utterance as the live recognizer hands it to the engine."""

    name: str
    reference: str
    samples: np.ndarray

    @property
    def seconds(self) -> float:
        return self.samples.size / WHISPER_RATE


@dataclass
class Cell:
    """Results of one (window, pad, decoder) over the corpus."""

    texts: dict[str, str] = field(default_factory=dict)
    encode_s: dict[str, float] = field(default_factory=dict)
    decode_s: dict[str, float] = field(default_factory=dict)
    detected: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- corpus


def pipeline_cut(samples: np.ndarray) -> np.ndarray:
    """The utterance as the live recognizer decodes it: pre-roll before the first speech, a pad after the last."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    speech = get_speech_timestamps(samples, VadOptions(min_silence_duration_ms=300, speech_pad_ms=0))
    if not speech:
        return samples
    start = max(speech[0]["start"] - int(PRE_ROLL_S * WHISPER_RATE), 0)
    return samples[start : speech[-1]["end"] + int(END_PAD_S * WHISPER_RATE)]


def russian_corpus(settings: Settings, extra: bool = True) -> list[Clip]:
    """tests/data/ru, the demo question and (when festival is installed) EXTRA_RU."""
    from voiceapp.demo import QUESTION_RU_TEXT, QUESTION_RU_WAV

    transcripts = json.loads((RU_DIR / "transcripts.json").read_text(encoding="utf-8"))
    files = [(RU_DIR / name, text) for name, text in transcripts.items()] + [(QUESTION_RU_WAV, QUESTION_RU_TEXT)]
    clips = [Clip(path.stem, text, decode(path.read_bytes(), settings).samples) for path, text in files]
    if extra:
        clips += _festival_clips(settings, EXTRA_RU)
    return [Clip(c.name, c.reference, pipeline_cut(c.samples)) for c in clips]


def _festival_clips(settings: Settings, texts: Iterable[str]) -> list[Clip]:
    """`texts` spoken by festival's Russian voice (none when festival is not installed)."""
    from voiceapp.tts import festival

    problem = festival.check(settings)
    if problem:
        print(f"note: EXTRA_RU left out: {problem}")
        return []
    provider = festival.create(settings)
    try:
        return [
            Clip(f"extra{i + 1}", text, decode(provider.synthesize(text, None, "ru").audio, settings).samples)
            for i, text in enumerate(texts)
        ]
    finally:
        provider.close()


def english_corpus(settings: Settings) -> list[Clip]:
    """The real English recordings and the Piper questions of the bench."""
    from . import speech

    utterances = speech.recordings(settings) + speech.synthesized(settings)
    return [
        Clip(u.name, u.text, pipeline_cut(np.frombuffer(u.pcm, "<i2").astype(np.float32) / 32768.0)) for u in utterances
    ]


# ---------------------------------------------------------------- measurement


def load_model(settings: Settings, model: str, threads: int):
    """A stock faster-whisper WhisperModel (int8, CPU) for `model`, with `threads` threads."""
    from faster_whisper import WhisperModel

    source = resolve_model(settings.replace(whisper_model=model))
    return WhisperModel(source.location, device="cpu", compute_type="int8", cpu_threads=threads)


def window_features(model, samples: np.ndarray, frames: int, pad: str) -> np.ndarray:
    """Log-mel of the clip in a `frames` window: padded with zero features (faster-whisper) or real silence."""
    from faster_whisper.audio import pad_or_trim

    if pad == "silence":
        padded = np.concatenate([samples, np.zeros(max(frames * 160 - samples.size, 0), np.float32)])
        features = model.feature_extractor(padded)
        return pad_or_trim(features[:, :frames], frames)
    features = model.feature_extractor(samples)[:, :-1]  # faster-whisper drops the last (padding) frame
    return pad_or_trim(features, frames)


def _timed(call: Callable):
    began = time.perf_counter()
    result = call()
    return result, time.perf_counter() - began


class Measure:
    """Runs every candidate on a corpus with one model."""

    def __init__(self, model, language: str, prompt: str) -> None:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self.model = model
        self.language = language if model.model.is_multilingual else "en"
        self.tokenizer = Tokenizer(
            model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=self.language
        )
        self.suppress = list(get_suppressed_tokens(self.tokenizer, [-1]))
        self.prompt_tokens = self.tokenizer.encode(" " + prompt.strip())

    def clip(self, clip: Clip, windows, pads, decoders, cells: dict) -> None:
        """Encode `clip` once per window and pad; run every decoder on it; store texts and times in `cells`."""
        for window in windows:
            frames = window.frames(clip.samples.size)
            for pad in pads:
                features = window_features(self.model, clip.samples, frames, pad)
                encoded, encode_s = _timed(lambda f=features: self.model.encode(f))
                detected = (
                    self.model.model.detect_language(encoded)[0][0][0][2:-2]
                    if self.model.model.is_multilingual
                    else "en"
                )
                for decoder in decoders:
                    text, decode_s = _timed(lambda d=decoder, e=encoded, fr=frames: self.decode(e, d, fr, clip))
                    cell = cells.setdefault((window.label, pad, decoder), Cell())
                    cell.texts[clip.name], cell.encode_s[clip.name] = text, encode_s
                    cell.decode_s[clip.name], cell.detected[clip.name] = decode_s, detected

    def decode(self, encoded, decoder: Decoder, frames: int, clip: Clip) -> str:
        """One decode of `encoded` as faster-whisper's transcribe() would run it (temperature 0, one pass)."""
        previous = self.prompt_tokens if decoder.prompt else []
        prompt = self.model.get_prompt(self.tokenizer, previous, without_timestamps=not decoder.timestamps)
        short = frames < FULL_WINDOW_S * 100
        max_length = (
            min(len(prompt) + token_budget(clip.samples.size), self.model.max_length)
            if short
            else self.model.max_length
        )
        result = self.model.model.generate(
            encoded,
            [prompt],
            beam_size=decoder.beam,
            patience=1,
            length_penalty=1,
            max_length=max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self.suppress,
            max_initial_timestamp_index=50,  # faster-whisper's max_initial_timestamp=1.0 s
        )[0]
        return self.tokenizer.decode(result.sequences_ids[0]).strip()


# ---------------------------------------------------------------- the table


def _wer(clips: list[Clip], texts: dict[str, str]) -> tuple[int, int]:
    errors = words = 0
    for clip in clips:
        e, n = word_errors(clip.reference, texts[clip.name])
        errors, words = errors + e, words + n
    return errors, words


def rows(clips: list[Clip], cells: dict, language: str) -> list[dict]:
    """One summary row per (window, pad, decoder): WER, WER with the engine's fallback, median times."""
    out = []
    for (label, pad, decoder), cell in cells.items():
        full = cells.get(("30 s (stock)", "zeros", decoder))
        fell = [
            c.name
            for c in clips
            if label != "30 s (stock)" and short_window_failed([_Seg(cell.texts[c.name])], c.seconds)
        ]
        with_fallback = {c.name: (full.texts[c.name] if c.name in fell and full else cell.texts[c.name]) for c in clips}
        total_s = [
            cell.encode_s[c.name]
            + cell.decode_s[c.name]
            + ((full.encode_s[c.name] + full.decode_s[c.name]) if c.name in fell and full else 0.0)
            for c in clips
        ]
        errors, words = _wer(clips, cell.texts)
        fb_errors, _ = _wer(clips, with_fallback)
        out.append(
            {
                "window": label,
                "pad": pad,
                "decoder": decoder.label,
                "beam": decoder.beam,
                "timestamps": decoder.timestamps,
                "prompt": decoder.prompt,
                "errors": errors,
                "words": words,
                "wer": round(errors / words, 4),
                "fallbacks": len(fell),
                "wer_with_fallback": round(fb_errors / words, 4),
                "encode_p50_s": round(statistics.median(cell.encode_s.values()), 4),
                "decode_p50_s": round(statistics.median(cell.decode_s.values()), 4),
                "total_p50_s": round(statistics.median(total_s), 4),
                "wrong_language": sum(1 for v in cell.detected.values() if v != language),
                "texts": cell.texts,
            }
        )
    return out


class _Seg:
    """The text of a decode, shaped like a faster-whisper segment for short_window_failed()."""

    def __init__(self, text: str) -> None:
        self.text = text


def render(table: list[dict], stock_wer: float) -> str:
    """The rows as a Markdown table, with each row's WER minus the stock decode's."""
    head = (
        "| window | pad | decoder | WER | - stock | fallbacks | WER w/ fallback | encode p50 s | decode p50 s "
        "| total p50 s | wrong lang |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in table:
        lines.append(
            f"| {r['window']} | {r['pad']} | {r['decoder']} | {r['wer']:.3f} | {r['wer_with_fallback'] - stock_wer:+.3f} "
            f"| {r['fallbacks']} | {r['wer_with_fallback']:.3f} | {r['encode_p50_s']:.3f} | {r['decode_p50_s']:.3f} "
            f"| {r['total_p50_s']:.3f} | {r['wrong_language']} |"
        )
    return "\n".join(lines)


def run(settings: Settings, language: str, threads: int, quick: bool = False, pads: tuple[str, ...] = PADS[:1]) -> dict:
    """Measure every candidate on the language's corpus; the rows and the stock decode's WER."""
    model_name = "base" if language == "ru" else "tiny.en"
    clips = russian_corpus(settings, extra=not quick) if language == "ru" else english_corpus(settings)
    model = load_model(settings, model_name, threads)
    measure = Measure(model, language, PROMPTS[language])
    decoders = (PRODUCTION, Decoder(5, False, False)) if quick else DECODERS
    measure.clip(clips[0], WINDOWS[:1], PADS[:1], decoders[:1], {})  # warm-up, not counted
    cells: dict = {}
    for clip in clips:
        measure.clip(clip, WINDOWS, pads, decoders, cells)
    table = rows(clips, cells, language)
    stock = next(
        r for r in table if r["window"] == "30 s (stock)" and r["pad"] == "zeros" and r["decoder"] == PRODUCTION.label
    )
    return {
        "language": language,
        "model": model_name,
        "threads": threads,
        "clips": len(clips),
        "clip_seconds_p50": round(statistics.median(c.seconds for c in clips), 2),
        "words": stock["words"],
        "stock_wer": stock["wer"],
        "references": {c.name: c.reference for c in clips},
        "rows": table,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--language", choices=("ru", "en"), default="ru")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per decode (0: the worker's budget)")
    parser.add_argument("--quick", action="store_true", help="the repository's recordings, two decoders")
    parser.add_argument("--silence-pad", action="store_true", help="also fill windows with real silence")
    parser.add_argument("--json", type=Path, help="also write the rows (with every transcript) here")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    threads = args.threads or decode_budget(settings)[0]
    result = run(settings, args.language, threads, args.quick, PADS if args.silence_pad else PADS[:1])
    print(
        f"{result['language']}: {result['model']}, {result['clips']} clips (p50 {result['clip_seconds_p50']} s), "
        f"{result['words']} words, {threads} thread(s); stock = 30 s window, greedy, no timestamps"
    )
    print(render(result["rows"], result["stock_wer"]))
    if args.json:
        args.json.write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
