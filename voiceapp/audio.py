"""Audio in and out: decode any container to mono float32, PCM16 helpers, WAV writing."""

from __future__ import annotations

import io
import os
import struct
import wave
from pathlib import Path

import av
import numpy as np

from voiceapp.config import Settings
from voiceapp.errors import AudioError, AudioTooLong
from voiceapp.models import DecodedAudio

# Input sample rates outside this range are corrupt headers, not real recordings.
MIN_INPUT_RATE = 1_000
MAX_INPUT_RATE = 384_000
MIN_TARGET_RATE = 8_000
MAX_TARGET_RATE = 192_000
# Cap on undecodable packets in a row so a garbage stream cannot spin for long.
MAX_BAD_PACKETS = 50
# Demuxers for what browsers, phones and API clients send; others (playlists, obscure formats) are
# refused before FFmpeg parses them, which keeps the attack surface of uploads small.
ALLOWED_DEMUXERS = "wav,w64,flac,mp3,ogg,matroska,webm,mov,mp4,m4a,aac,aiff,caf,amr"
# Less than this is a header with no real content (a truncated upload).
MIN_DURATION = 0.01
# 7.1 surround is the most a real recording carries; more channels are a crafted file.
MAX_CHANNELS = 8


def decode(data: bytes, settings: Settings) -> DecodedAudio:
    """Decode a WAV/FLAC/MP3/Ogg/WebM/... file in memory to mono float32 at settings.audio_sample_rate."""
    _check_size(data, settings)
    rate = _target_rate(settings)
    max_samples = int(settings.audio_max_duration * rate)
    samples = _plain_wav(data, rate, max_samples, settings.audio_max_duration)
    if samples is not None:
        return DecodedAudio(samples=samples, sample_rate=rate)
    try:
        container = av.open(
            io.BytesIO(data), mode="r", metadata_errors="ignore", options={"format_whitelist": ALLOWED_DEMUXERS}
        )
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as err:
        raise AudioError(f"could not decode audio: not a supported audio file ({_reason(err)})") from err
    try:
        samples = _decode_container(container, rate, max_samples, settings.audio_max_duration)
    finally:
        container.close()
    return DecodedAudio(samples=samples, sample_rate=rate)


def _check_size(data: bytes, settings: Settings) -> None:
    """Reject empty input and input above AUDIO_MAX_BYTES before any parsing."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise AudioError("could not decode audio: expected bytes")
    if len(data) == 0:
        raise AudioError("could not decode audio: empty payload")
    if len(data) > settings.audio_max_bytes:
        raise AudioError(
            f"audio payload of {len(data)} bytes exceeds AUDIO_MAX_BYTES={settings.audio_max_bytes}",
            code="audio_too_large",
            status=413,
        )


def _target_rate(settings: Settings) -> int:
    """The output sample rate, validated."""
    rate = int(settings.audio_sample_rate)
    if not MIN_TARGET_RATE <= rate <= MAX_TARGET_RATE:
        raise AudioError(f"AUDIO_SAMPLE_RATE={rate} is outside {MIN_TARGET_RATE}..{MAX_TARGET_RATE} Hz")
    return rate


def _decode_container(container, rate: int, max_samples: int, max_duration: float) -> np.ndarray:
    """Demux and decode the first audio stream, stopping as soon as the duration limit is passed."""
    if not container.streams.audio:
        raise AudioError("could not decode audio: the file has no audio stream")
    stream = container.streams.audio[0]
    _check_input_rate(stream)
    _check_channels(stream.codec_context.channels)
    chunks: list[np.ndarray] = []
    total = 0
    resampler, layout = None, None
    try:
        for frame in _frames(container, stream):
            if frame.layout.name != layout:
                # A new channel layout mid-stream needs a new resampler; flush the old one first.
                _check_channels(frame.layout.nb_channels)
                total += _drain(resampler, None, chunks)
                # Packed (interleaved) output: one plane whatever the channel count. PyAV miscounts the
                # planes of planar frames with 8 or more channels and reads past them (a segfault).
                resampler, layout = av.AudioResampler(format="flt", layout=frame.layout, rate=rate), frame.layout.name
            total += _drain(resampler, frame, chunks)
            if total > max_samples:
                raise AudioTooLong(f"audio is longer than AUDIO_MAX_DURATION={max_duration:g} s")
        total += _drain(resampler, None, chunks)
    except (av.FFmpegError, ValueError, MemoryError) as err:
        raise AudioError(f"could not decode audio: {_reason(err)}") from err
    if total < MIN_DURATION * rate:
        raise AudioError("could not decode audio: no audio samples (empty, truncated or corrupt file)")
    if total > max_samples:
        raise AudioTooLong(f"audio is longer than AUDIO_MAX_DURATION={max_duration:g} s")
    samples = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
    return np.clip(samples, -1.0, 1.0).astype(np.float32, copy=False)


def _plain_wav(data: bytes, rate: int, max_samples: int, max_duration: float) -> np.ndarray | None:
    """Samples of a PCM16 WAV already at `rate` (what the widget and our own stages send), else None.

    Read with numpy alone: going through FFmpeg frame by frame cost about 8 ms per 11 s upload, paid twice per
    turn (API and recognition). Anything else (other rates, widths, codecs, broken headers) goes to FFmpeg.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    try:
        with wave.open(io.BytesIO(data), "rb") as reader:
            if reader.getsampwidth() != 2 or reader.getframerate() != rate:
                return None
            channels = reader.getnchannels()
            _check_channels(channels)
            pcm = reader.readframes(max_samples + 1)  # never more than the limit allows, whatever the header says
    except (wave.Error, EOFError, ValueError, struct.error):
        return None
    frames = np.frombuffer(pcm[: len(pcm) // (2 * channels) * 2 * channels], dtype="<i2").reshape(-1, channels)
    if len(frames) > max_samples:
        raise AudioTooLong(f"audio is longer than AUDIO_MAX_DURATION={max_duration:g} s")
    if len(frames) < MIN_DURATION * rate:
        raise AudioError("could not decode audio: no audio samples (empty, truncated or corrupt file)")
    as_float = frames.astype(np.float32) / 32768.0
    return as_float.mean(axis=1, dtype=np.float32) if channels > 1 else as_float.reshape(-1)


def _check_input_rate(stream) -> None:
    """Refuse streams whose header claims an impossible sample rate."""
    if stream.codec_context is None:  # a codec FFmpeg cannot decode (a corrupt or exotic format tag)
        raise AudioError("could not decode audio: unsupported audio codec")
    declared = stream.codec_context.sample_rate or stream.rate or 0
    if not MIN_INPUT_RATE <= declared <= MAX_INPUT_RATE:
        raise AudioError(f"could not decode audio: unsupported sample rate {declared} Hz")


def _frames(container, stream):
    """Decoded frames of `stream`; a few bad packets are skipped, a run of them is an error."""
    bad = 0
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.InvalidDataError as err:
            # Browsers sometimes emit a damaged packet; tolerate a few like ffmpeg does.
            bad += 1
            if bad > MAX_BAD_PACKETS:
                raise AudioError(f"could not decode audio: too many corrupt packets ({_reason(err)})") from err
            continue
        bad = 0
        for frame in frames:
            _check_frame_rate(frame)
            yield frame


def _check_channels(count: int) -> None:
    """Refuse streams with no channel or more than MAX_CHANNELS."""
    if not 1 <= (count or 0) <= MAX_CHANNELS:
        raise AudioError(f"could not decode audio: {count} channels is not supported (1 to {MAX_CHANNELS})")


def _check_frame_rate(frame) -> None:
    """Mid-stream format changes can carry nonsense rates; refuse them."""
    if not MIN_INPUT_RATE <= (frame.sample_rate or 0) <= MAX_INPUT_RATE:
        raise AudioError(f"could not decode audio: unsupported sample rate {frame.sample_rate} Hz")


def _drain(resampler, frame, chunks: list[np.ndarray]) -> int:
    """Resample `frame` (None flushes) and store mono frames; returns the new sample count."""
    if resampler is None:
        return 0
    return sum(_append(chunks, out) for out in resampler.resample(frame))


def _append(chunks: list[np.ndarray], frame) -> int:
    """Store one resampled packed frame as mono (channel average, no +3 dB downmix gain)."""
    channels = frame.layout.nb_channels
    interleaved = frame.to_ndarray().reshape(-1, channels)
    mono = interleaved.mean(axis=1, dtype=np.float32) if channels > 1 else interleaved.reshape(-1)
    if mono.size:
        chunks.append(mono.astype(np.float32, copy=False))
    return int(mono.size)


def _reason(err: BaseException) -> str:
    """A short, client-safe description of a decoder error."""
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return text.split(":")[0].strip() or type(err).__name__


def pcm16_to_float(data: bytes) -> np.ndarray:
    """Little-endian signed 16-bit mono frames -> float32 in [-1, 1)."""
    if len(data) % 2:
        raise AudioError(f"PCM16 payload has an odd byte count ({len(data)})")
    return np.frombuffer(bytes(data), dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] -> little-endian 16-bit PCM bytes."""
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    return (clipped * 32767.0).round().astype("<i2").tobytes()


def to_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    """Mono float samples -> a PCM16 WAV file in memory."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(int(sample_rate))
        writer.writeframes(float_to_pcm16(samples))
    return buffer.getvalue()


def save_as_wav(data: bytes, settings: Settings, path: Path, rate: int = 16_000) -> Path:
    """Decode any audio file's bytes and write it as a mono PCM16 WAV at `rate`, atomically (demo recordings)."""
    decoded = decode(data, settings.replace(audio_sample_rate=rate))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(to_wav(decoded.samples, decoded.sample_rate))
    os.replace(tmp, path)
    return path


def wav_info(data: bytes) -> tuple[int, int, float]:
    """(sample_rate, channels, duration in seconds) of a PCM WAV file."""
    try:
        with wave.open(io.BytesIO(data), "rb") as reader:
            rate, channels, frames = reader.getframerate(), reader.getnchannels(), reader.getnframes()
    except (wave.Error, EOFError, ValueError) as err:
        raise AudioError(f"not a PCM WAV file: {err}") from err
    if rate <= 0:
        raise AudioError("not a PCM WAV file: sample rate 0")
    return rate, channels, frames / float(rate)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample mono float samples with FFmpeg's resampler (through a WAV round trip)."""
    if from_rate == to_rate:
        return np.asarray(samples, dtype=np.float32)
    settings = Settings.from_env({}, audio_sample_rate=to_rate, audio_max_duration=1e9, audio_max_bytes=2**62)
    return decode(to_wav(samples, from_rate), settings).samples


class StreamResampler:
    """Resample a live stream chunk by chunk, keeping filter state across chunks (no edge clicks)."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self.from_rate, self.to_rate = int(from_rate), int(to_rate)
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.to_rate)
        self._pts = 0

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Resample the next chunk of mono float samples; output may lag input by a few ms."""
        samples = np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1)
        if samples.size == 0:
            return np.zeros(0, dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        frame.sample_rate = self.from_rate
        frame.pts = self._pts
        self._pts += samples.shape[1]
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros(0, dtype=np.float32)
