"""Audio files of each container browsers and clients send, encoded at test time from a real recording, and damaged copies."""

from __future__ import annotations

import io
import random
import struct

import av
import numpy as np

from voiceapp.audio import to_wav

# format name -> (PyAV container format, codec, sample rate)
FORMATS = {
    "flac": ("flac", "flac", 16000),
    "mp3": ("mp3", "libmp3lame", 16000),
    "ogg": ("ogg", "libopus", 48000),
    "webm": ("webm", "libopus", 48000),
    "m4a": ("ipod", "aac", 16000),
}


def encode(samples: np.ndarray, rate: int, fmt: str) -> bytes:
    """Mono float32 samples at `rate` as a file of `fmt` (wav, flac, mp3, ogg, webm, m4a)."""
    if fmt == "wav":
        return to_wav(samples, rate)
    container_format, codec, out_rate = FORMATS[fmt]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=out_rate, layout="mono")
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=out_rate)
        pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = rate
        for out in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(out):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def truncate(data: bytes, keep: int) -> bytes:
    """The first `keep` bytes (an upload cut short)."""
    return data[:keep]


def garble(data: bytes, keep: int, seed: int = 7) -> bytes:
    """The first `keep` bytes (the header) followed by random bytes of the same total length."""
    rng = random.Random(seed)
    return data[:keep] + bytes(rng.getrandbits(8) for _ in range(len(data) - keep))


def patch(data: bytes, offset: int, replacement: bytes) -> bytes:
    """`data` with bytes at `offset` replaced."""
    return data[:offset] + replacement + data[offset + len(replacement) :]


def wav_with_rate(rate: int, seconds: float = 1.0) -> bytes:
    """A PCM16 mono WAV whose header claims `rate` Hz (absurd rates included), with 16 kHz worth of noise."""
    frames = np.random.default_rng(3).integers(-2000, 2000, int(16000 * seconds), dtype="<i2").tobytes()
    header = (
        b"RIFF"
        + struct.pack("<I", 36 + len(frames))
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, (rate * 2) & 0xFFFFFFFF, 2, 16)
        + b"data"
        + struct.pack("<I", len(frames))
    )
    return header + frames


def silence_wav(seconds: float, rate: int = 16000) -> bytes:
    """A silent PCM16 mono WAV of `seconds`."""
    return to_wav(np.zeros(int(seconds * rate), dtype=np.float32), rate)


def encode_layout(fmt: str, layout: str, seconds: float = 1.0, rate: int = 16000) -> bytes:
    """A file of `fmt` with a multi-channel `layout` (e.g. '5.1', '7.1(wide)', 'octagonal'): a tone per channel."""
    container_format, codec, out_rate = FORMATS[fmt]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=out_rate, layout=layout)
        channels = stream.codec_context.layout.nb_channels
        t = np.arange(int(seconds * rate)) / rate
        tones = np.stack([0.2 * np.sin(2 * np.pi * (200 + 50 * i) * t) for i in range(channels)])
        packed = (tones * 32767).astype("<i2").T.reshape(1, -1).copy()
        frame = av.AudioFrame.from_ndarray(packed, format="s16", layout=layout)
        frame.sample_rate = rate
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout=layout, rate=out_rate)
        for out in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(out):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def wav_layout(channels: int, bits: int = 16, mask: int | None = None, float_samples: bool = False) -> bytes:
    """A 1 s, 16 kHz WAV of `channels` channels; with `mask`, a WAVE_FORMAT_EXTENSIBLE header whose channel
    mask may disagree with the channel count (odd layouts real files carry)."""
    rate, width = 16000, bits // 8
    rng = np.random.default_rng(channels * 100 + bits)
    if float_samples:
        frames = rng.uniform(-0.1, 0.1, rate * channels).astype("<f4").tobytes()
    elif bits == 8:
        frames = rng.integers(100, 156, rate * channels, dtype=np.uint8).tobytes()
    else:
        samples = rng.integers(-2000, 2000, rate * channels, dtype="<i4")
        frames = b"".join(int(s).to_bytes(4, "little", signed=True)[:width] for s in samples)
    tag = 3 if float_samples else 1
    block = channels * width
    if mask is None:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    else:
        sub = struct.pack("<H", tag) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * block, block, bits, 22, bits, mask) + sub
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(frames)) + frames
    return b"RIFF" + struct.pack("<I", len(body)) + body
