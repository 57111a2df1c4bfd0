"""TTS provider "festival": Debian's festival with its Russian voice (apt-get install festival festvox-ru).

Loading a festival voice costs about 0.5 s, so each worker keeps ONE festival process alive
(`festival --pipe`, Scheme commands on stdin) and asks it for one WAV file per sentence. Festival
buffers its stdout, but writes stderr at once: every command is followed by a marker printed
to stderr, and what it printed before the marker is the command's error output.
"""

from __future__ import annotations

import io
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
import uuid
import wave
from pathlib import Path

from voiceapp.config import Settings, language_map
from voiceapp.errors import ProviderUnavailable, TtsError
from voiceapp.models import Synthesis
from voiceapp.tts.urgency import VoiceLock

NAME = "festival"
INSTALL_HINT = "apt-get install festival festvox-ru"
# The festival voice per language when TTS_VOICES names none. English stays with Piper: festival's
# English diphone voice is worse, so festival never speaks a language it has no voice here for.
DEFAULT_VOICES = {"ru": "msu_ru_nsh_clunits"}
VOICE_DIRS = ("/usr/share/festival/voices", "/usr/local/share/festival/voices", "/usr/lib/festival/voices")
VOICE_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")  # a voice name goes into a Scheme command: nothing else
START_TIMEOUT = 30.0  # seconds to start festival and load a voice (a loaded 2-core machine is slow)
WARM_TEXT = "Здравствуйте."
# Festival's letter-to-sound rules fail on characters they do not know («», quotes, dashes, symbols):
# keep letters, digits, spaces and the punctuation that shapes intonation.
_UNSAYABLE = re.compile(r"[^\w\s.,!?:;-]+")
_DASHES = re.compile(r"\s*[—–]\s*")
_ERROR_MARKERS = ("SIOD ERROR", "LTS_Ruleset", "error:", "Error:")


def cache_key(settings: Settings) -> tuple:
    """Settings that change the festival process."""
    return (settings.festival_bin,)


def installed_voices(dirs: tuple[str, ...] = VOICE_DIRS) -> set[str]:
    """Festival voices installed on this machine (directories <dir>/<language>/<voice>)."""
    found: set[str] = set()
    for base in dirs:
        for path in Path(base).glob("*/*"):
            if path.is_dir():
                found.add(path.name)
    return found


def check(settings: Settings) -> str | None:
    """Why festival cannot speak here, or None."""
    if shutil.which(settings.festival_bin) is None:
        return f"festival is not installed ({settings.festival_bin!r} not found): {INSTALL_HINT}"
    wanted = set(_configured_voices(settings).values())
    if not wanted & installed_voices():
        return f"no festival voice installed ({', '.join(sorted(wanted))}): {INSTALL_HINT}"
    return None


def _configured_voices(settings: Settings) -> dict[str, str]:
    """Language code -> festival voice: DEFAULT_VOICES, overridden by TTS_VOICES entries for festival."""
    voices = dict(DEFAULT_VOICES)
    for code, choice in language_map(settings.tts_voices).items():
        provider, _, voice = choice.partition("/")
        if provider.strip().lower() == NAME and voice.strip():
            voices[code] = voice.strip()
    return voices


def _code(language: str | None) -> str | None:
    """ "ru-RU" -> "ru"."""
    return language.replace("_", "-").split("-")[0].lower() if language else None


def voice_for(settings: Settings, requested: str | None = None, language: str | None = None) -> str:
    """The voice that will speak: a requested festival voice (if installed), else the language's, else ""."""
    if requested and VOICE_RE.match(requested) and requested in installed_voices():
        return requested
    return _configured_voices(settings).get(_code(language) or "", "")


def speaks(settings: Settings, language: str | None) -> bool:
    """Whether an installed festival voice speaks `language` (festival never guesses a voice)."""
    voice = voice_for(settings, None, language)
    return bool(voice) and voice in installed_voices()


def output_format(settings: Settings) -> str:
    """What the audio is (part of the cache key)."""
    return "wav"


def create(settings: Settings) -> FestivalProvider:
    """Start the festival process and load the first configured voice."""
    problem = check(settings)
    if problem:
        raise ProviderUnavailable(problem)
    provider = FestivalProvider(settings)
    provider.warm()
    return provider


def speakable(text: str) -> str:
    """`text` without the characters festival cannot say (dashes become pauses)."""
    text = _DASHES.sub(", ", text)
    text = _UNSAYABLE.sub(" ", text.replace("\\", " ").replace('"', " "))
    text = re.sub(r"\s+([.,!?:;])", r"\1", re.sub(r"\s+", " ", text))
    return text.strip(" ,;:-")


class FestivalProvider:
    """One long-lived festival process; calls are serialised (one process speaks one sentence at a time)."""

    name = NAME

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = VoiceLock()
        self._proc: subprocess.Popen | None = None
        self._loaded = ""
        self._buffer = b""
        self._dir = Path(tempfile.mkdtemp(prefix="voiceapp-festival-"))
        self.voice = voice_for(settings, None, "ru") or next(iter(_configured_voices(settings).values()))

    def synthesize(self, text: str, voice: str | None = None, language: str | None = None) -> Synthesis:
        """A 16 kHz mono WAV of `text` in the voice for `language` (or the requested festival voice)."""
        name = voice_for(self._settings, voice, language) or self.voice
        said = speakable(text or "")
        if not re.search(r"\w", said):
            raise TtsError("nothing to synthesize: no speakable text", status=400)
        with self._lock.hold():
            audio = self._speak(said, name)
        with wave.open(io.BytesIO(audio)) as wav:
            rate, frames = wav.getframerate(), wav.getnframes()
        if frames <= 0:
            raise TtsError("festival produced no audio for this text")
        return Synthesis(
            audio=audio,
            mime_type="audio/wav",
            provider=self.name,
            voice=name,
            sample_rate=rate,
            duration=round(frames / rate, 3),
            extra={"characters": len(text), "language": language, "requested_voice": voice},
        )

    def warm(self) -> None:
        """Start festival, load the voice and speak once (the first sentence of a process is slower)."""
        self.synthesize(WARM_TEXT, self.voice)

    def close(self) -> None:
        """Stop the festival process."""
        with self._lock.hold():
            self._stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _speak(self, text: str, voice: str) -> bytes:
        """Run one synthesis in the live process (restarting it if it died); the WAV bytes."""
        self._ensure(voice)
        out = self._dir / f"{uuid.uuid4().hex}.wav"
        command = f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{out}" \'riff)'
        try:
            errors = self._run(command, self._settings.tts_timeout)
            if not out.is_file() or out.stat().st_size <= 44:
                raise TtsError(f"festival could not say this text: {errors.strip()[:200] or 'no audio'}")
            return out.read_bytes()
        finally:
            out.unlink(missing_ok=True)

    def _ensure(self, voice: str) -> None:
        """A running process with `voice` loaded."""
        if self._proc is None or self._proc.poll() is not None:
            self._start()
        if voice != self._loaded:
            errors = self._run(f"(voice_{voice})", START_TIMEOUT)
            if any(marker in errors for marker in _ERROR_MARKERS):
                raise TtsError(f"festival could not load voice {voice!r}: {errors.strip()[:200]}")
            self._loaded = voice

    def _start(self) -> None:
        """Start `festival --pipe` (stdout unused: festival buffers it; markers come on stderr)."""
        self._stop()
        try:
            self._proc = subprocess.Popen(
                [self._settings.festival_bin, "--pipe"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except OSError as err:
            raise ProviderUnavailable(f"could not start festival: {err}; {INSTALL_HINT}") from err
        self._loaded, self._buffer = "", b""

    def _stop(self) -> None:
        """Kill the process (a timed-out one may be stuck mid-sentence)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._proc = None

    def _run(self, command: str, timeout: float) -> str:
        """Send one Scheme command; what festival printed on stderr until its marker."""
        marker = f"voiceapp-done-{uuid.uuid4().hex}"
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(f'{command}\n(format stderr "{marker}\\n")\n'.encode())
            self._proc.stdin.flush()
        except OSError as err:
            self._stop()
            raise TtsError(f"festival stopped: {err}") from err
        return self._read_until(marker.encode(), timeout)

    def _read_until(self, marker: bytes, timeout: float) -> str:
        """Read stderr until `marker`; a process that is silent for `timeout` s is killed."""
        assert self._proc is not None and self._proc.stderr is not None
        fd = self._proc.stderr.fileno()
        deadline = time.monotonic() + timeout
        while marker not in self._buffer:
            left = deadline - time.monotonic()
            ready = select.select([fd], [], [], max(left, 0))[0] if left > 0 else []
            chunk = os.read(fd, 65536) if ready else b""
            if not chunk:
                self._stop()
                reason = "stopped" if ready else f"gave no answer within {timeout:g} s"
                raise TtsError(f"festival {reason}", code="tts_timeout" if not ready else None)
            self._buffer += chunk
        before, _, self._buffer = self._buffer.partition(marker)
        self._buffer = self._buffer.lstrip(b"\n")
        return before.decode("utf-8", "replace")


def make_demo(settings: Settings, path: Path, text: str) -> Path:
    """Write a spoken Russian question as a 16 kHz mono PCM16 WAV (the Russian demo's recording)."""
    from voiceapp.audio import save_as_wav

    provider = create(settings)
    try:
        speech = provider.synthesize(text, None, "ru")
    finally:
        provider.close()
    return save_as_wav(speech.audio, settings, path)


def main(argv: list[str] | None = None) -> None:
    """`python -m voiceapp.tts.festival --make-demo [--out FILE] [--text TEXT]`."""
    import argparse

    from voiceapp.demo import QUESTION_RU_TEXT, QUESTION_RU_WAV

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--make-demo", action="store_true", help="regenerate voiceapp/demo/question_ru.wav")
    parser.add_argument("--out", type=Path, default=QUESTION_RU_WAV)
    parser.add_argument("--text", default=QUESTION_RU_TEXT)
    args = parser.parse_args(argv)
    if not args.make_demo:
        parser.error("nothing to do: pass --make-demo")
    print(make_demo(Settings.from_env(), args.out, args.text))


if __name__ == "__main__":
    main()
