"""Decoding real speech in every container the widget or API may send, and refusing bad input."""

from __future__ import annotations

import io
import os
import struct
import wave
from pathlib import Path

import av
import numpy as np
import pytest

import voiceapp.audio as audio_mod
from voiceapp.audio import StreamResampler, decode, float_to_pcm16, pcm16_to_float, resample, to_wav, wav_info
from voiceapp.config import Settings
from voiceapp.errors import AudioError, AudioTooLong

DATA = str(Path(__file__).resolve().parent / "data")
JFK = os.path.join(DATA, "jfk.flac")
LIBRI = os.path.join(DATA, "librispeech_stereo.wav")


def encode(
    samples: np.ndarray, rate: int, fmt: str, codec: str, channels: int = 1, out_rate: int | None = None
) -> bytes:
    """Encode mono float samples into a container in memory with PyAV."""
    out_rate = out_rate or rate
    layout = "mono" if channels == 1 else "stereo"
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=out_rate, layout=layout)
        planes = np.tile(samples[None, :], (channels, 1)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout=layout)
        frame.sample_rate = rate
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout=layout, rate=out_rate)
        for chunk in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(chunk):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def speech(settings) -> np.ndarray:
    """The JFK recording at 16 kHz mono: the reference every encoded copy is compared with."""
    with open(JFK, "rb") as f:
        return decode(f.read(), settings).samples


@pytest.fixture(scope="module")
def webm(speech) -> bytes:
    return encode(speech, 16000, "webm", "libopus", channels=2, out_rate=48000)


FORMATS = [
    ("wav", "pcm_s16le", 2, 44100),
    ("flac", "flac", 1, 22050),
    ("mp3", "libmp3lame", 2, 44100),
    ("ogg", "libopus", 1, 48000),
    ("webm", "libopus", 2, 48000),
    ("adts", "aac", 1, 24000),
    ("mp4", "aac", 1, 48000),  # Safari's MediaRecorder records audio/mp4
]


def _envelope(samples: np.ndarray, rate: int = 16000) -> np.ndarray:
    """RMS per 50 ms: robust to codec phase shifts, still tracks the words."""
    hop = rate // 20
    n = len(samples) // hop
    return np.sqrt((samples[: n * hop].reshape(n, hop) ** 2).mean(axis=1))


def test_jfk_flac_decodes_to_16k_mono_float(speech):
    assert speech.dtype == np.float32 and speech.ndim == 1
    assert len(speech) == pytest.approx(11.0 * 16000, abs=160)
    assert np.abs(speech).max() <= 1.0 and np.abs(speech).max() > 0.3


def _similarity(reference: np.ndarray, other: np.ndarray) -> float:
    """Best envelope correlation within +-150 ms (codecs such as AAC add priming delay)."""
    a = _envelope(reference)
    best = -1.0
    for shift in range(-2400, 2401, 160):
        b = _envelope(other[shift:] if shift >= 0 else np.concatenate([np.zeros(-shift, np.float32), other]))
        n = min(len(a), len(b))
        best = max(best, float(np.corrcoef(a[:n], b[:n])[0, 1]))
    return best


@pytest.mark.parametrize("fmt,codec,channels,rate", FORMATS, ids=[f[0] + "-" + f[1] for f in FORMATS])
def test_decode_each_container(settings, speech, fmt, codec, channels, rate):
    data = encode(speech, 16000, fmt, codec, channels=channels, out_rate=rate)
    result = decode(data, settings)
    assert result.sample_rate == 16000
    assert result.samples.dtype == np.float32 and result.samples.ndim == 1
    assert result.duration == pytest.approx(11.0, abs=0.1)
    # Same speech, same loudness contour: the decoder did not mangle or mix up channels.
    assert _similarity(speech, result.samples) > 0.95
    assert np.sqrt(np.mean(result.samples**2)) == pytest.approx(np.sqrt(np.mean(speech**2)), rel=0.2)


def test_decode_resamples_to_configured_rate(speech):
    data = encode(speech, 16000, "flac", "flac")
    result = decode(data, Settings.from_env({}, audio_sample_rate=8000))
    assert result.sample_rate == 8000
    assert len(result.samples) == pytest.approx(11.0 * 8000, abs=80)


def test_decode_stereo_wav_is_downmixed(settings):
    with open(LIBRI, "rb") as f:
        data = f.read()
    rate, channels, duration = wav_info(data)
    assert (rate, channels) == (16000, 2)
    with wave.open(io.BytesIO(data)) as reader:
        pcm = np.frombuffer(reader.readframes(reader.getnframes()), "<i2").reshape(-1, 2) / 32768.0
    result = decode(data, settings)
    assert result.duration == pytest.approx(duration, abs=0.01)
    expected = pcm.mean(axis=1)
    assert np.corrcoef(expected, result.samples[: len(expected)])[0, 1] > 0.99


@pytest.mark.parametrize(
    "payload",
    [b"", os.urandom(50_000), b"hello world " * 500, bytes(50_000)],
    ids=["empty", "random", "text", "zeros"],
)
def test_garbage_is_refused(settings, payload):
    with pytest.raises(AudioError) as info:
        decode(payload, settings)
    assert "could not decode audio" in info.value.message
    assert info.value.code == "invalid_audio_payload" and info.value.status == 400


def test_container_outside_the_allow_list_is_refused(settings, speech):
    # FFmpeg could read Sun AU, but uploads are limited to the containers clients really send.
    data = encode(speech[:16000], 16000, "au", "pcm_s16be")
    with av.open(io.BytesIO(data)) as container:
        assert container.format.name == "au"
    with pytest.raises(AudioError):
        decode(data, settings)


def test_playlist_cannot_pull_local_files(settings, speech, tmp_path):
    target = tmp_path / "secret.wav"
    target.write_bytes(to_wav(speech[:16000], 16000))
    for payload in (
        f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile://{target}\n#EXT-X-ENDLIST\n".encode(),
        f"ffconcat version 1.0\nfile '{target}'\n".encode(),
    ):
        with pytest.raises(AudioError):
            decode(payload, settings)


def test_raw_pcm_is_not_accepted(settings, speech):
    with pytest.raises(AudioError):
        decode(float_to_pcm16(speech), settings)


@pytest.mark.parametrize(
    "fmt,codec,cut",
    [
        ("wav", "pcm_s16le", 20),
        ("flac", "flac", 100),
        ("mp3", "libmp3lame", 100),
        ("ogg", "libopus", 1000),
        ("webm", "libopus", 100),
    ],
)
def test_truncated_header_is_refused(settings, speech, fmt, codec, cut):
    data = encode(speech, 16000, fmt, codec)
    with pytest.raises(AudioError):
        decode(data[:cut], settings)


def test_file_cut_midway_keeps_the_decodable_prefix(settings, webm):
    # An upload interrupted mid-recording still carries the words spoken so far.
    result = decode(webm[: len(webm) // 2], settings)
    assert 3.0 < result.duration < 8.0


def test_webm_chunk_without_header_is_refused(settings, webm):
    # MediaRecorder's later chunks carry no WebM header and cannot be decoded alone.
    with pytest.raises(AudioError):
        decode(webm[len(webm) // 2 :], settings)


@pytest.mark.parametrize("rate", [0, 3, 2_000_000_000])
def test_absurd_sample_rate_in_header_is_refused(settings, speech, rate):
    data = bytearray(to_wav(speech[:16000], 16000))
    data[24:28] = struct.pack("<I", rate)
    data[28:32] = struct.pack("<I", min(rate * 2, 2**32 - 1))
    with pytest.raises(AudioError):
        decode(bytes(data), settings)


def test_oversize_payload_is_refused_before_decoding(speech):
    data = to_wav(speech, 16000)
    small = Settings.from_env({}, audio_max_bytes=len(data) - 1)
    with pytest.raises(AudioError) as info:
        decode(data, small)
    assert "AUDIO_MAX_BYTES" in info.value.message and info.value.status == 413


def test_too_long_raises_audio_too_long(speech):
    data = encode(speech, 16000, "ogg", "libopus", out_rate=48000)
    short = Settings.from_env({}, audio_max_duration=5.0)
    with pytest.raises(AudioTooLong) as info:
        decode(data, short)
    assert info.value.code == "audio_too_long" and info.value.status == 413
    assert isinstance(info.value, AudioError)


def test_long_input_stops_decoding_at_the_limit(monkeypatch):
    # Twenty minutes at 8 kHz fits under AUDIO_MAX_BYTES, so only the duration limit protects us.
    noise = (np.random.default_rng(1).standard_normal(8000 * 60 * 20) * 0.01).astype(np.float32)
    data = to_wav(noise, 8000)
    decoded = []
    real_append = audio_mod._append

    def counting_append(chunks, frame):
        n = real_append(chunks, frame)
        decoded.append(n)
        return n

    monkeypatch.setattr(audio_mod, "_append", counting_append)
    with pytest.raises(AudioTooLong):
        decode(data, Settings.from_env({}, audio_max_duration=10.0))
    # It stopped right after 10 s, not after decoding the whole twenty minutes.
    assert 10 * 16000 < sum(decoded) < 12 * 16000


def _ffmpeg_decode(data: bytes, rate: int = 16000) -> np.ndarray:
    """The general decoder on the same bytes (what a plain WAV took before it had its own path)."""
    with av.open(io.BytesIO(data)) as container:
        return audio_mod._decode_container(container, rate, rate * 60, 60.0)


def test_plain_wav_decodes_to_the_same_samples_as_ffmpeg(settings, speech):
    for data in (to_wav(speech, 16000), Path(LIBRI).read_bytes()):  # mono, and stereo (downmixed)
        np.testing.assert_array_equal(decode(data, settings).samples, _ffmpeg_decode(data))


def test_plain_wav_is_read_without_ffmpeg(settings, speech, monkeypatch):
    monkeypatch.setattr(audio_mod.av, "open", lambda *a, **k: pytest.fail("a plain WAV went through FFmpeg"))
    assert decode(to_wav(speech, 16000), settings).duration == pytest.approx(11.0, abs=0.01)


def test_plain_wav_longer_than_the_limit_is_refused(speech):
    with pytest.raises(AudioTooLong):
        decode(to_wav(speech, 16000), Settings.from_env({}, audio_max_duration=5.0))


def test_plain_wav_whose_header_claims_more_frames_keeps_what_is_there(settings, speech):
    data = to_wav(speech[:32000], 16000)
    cut = data[: 44 + 16001 * 2 + 1]  # one second and a half frame of the two the header announces
    assert decode(cut, settings).duration == pytest.approx(16001 / 16000)


def test_pcm16_to_float_values():
    data = struct.pack("<4h", 0, 16384, -32768, 32767)
    assert pcm16_to_float(data).tolist() == pytest.approx([0.0, 0.5, -1.0, 32767 / 32768])
    assert pcm16_to_float(data).dtype == np.float32


def test_pcm16_odd_byte_count_is_refused():
    with pytest.raises(AudioError):
        pcm16_to_float(b"\x00\x01\x02")


def test_to_wav_round_trip(speech):
    data = to_wav(speech[:32000], 16000)
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert wav_info(data) == (16000, 1, 2.0)
    back = pcm16_to_float(data[44:])
    assert np.max(np.abs(back - speech[:32000])) < 1e-4


def test_wav_info_refuses_non_wav():
    with pytest.raises(AudioError):
        wav_info(b"OggS" + bytes(100))


def test_resample_changes_rate_keeps_duration(speech):
    out = resample(speech, 16000, 22050)
    assert len(out) == pytest.approx(11.0 * 22050, abs=50)


def test_stream_resampler_is_seamless_across_chunks():
    t = np.arange(48000 * 2) / 48000
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    resampler = StreamResampler(48000, 16000)
    out = np.concatenate([resampler.push(tone[i : i + 4800]) for i in range(0, len(tone), 4800)])
    assert len(out) == pytest.approx(32000, abs=64)
    # A 440 Hz sine at 16 kHz moves at most 2*pi*440/16000 per sample: a chunk edge click would exceed it.
    assert np.abs(np.diff(out[200:-200])).max() < 2 * np.pi * 440 / 16000 * 1.05


# ---------------------------------------------------------------- many channels (a crafted WAV crashed PyAV)

_DECODE_IN_CHILD = """
import sys, numpy as np
from voiceapp.audio import decode
from voiceapp.config import Settings
from voiceapp.errors import AudioError
try:
    out = decode(open(sys.argv[1], "rb").read(), Settings.from_env({}))
except AudioError as err:
    print("refused", err.message)
else:
    np.save(sys.argv[2], out.samples)
    print("decoded", out.samples.size)
"""


def _decode_in_child(data: bytes, tmp_path: Path) -> tuple[int, str, np.ndarray | None]:
    """Decode in a fresh interpreter, so a crash of the decoder is a failed test, not a dead test run."""
    import subprocess
    import sys

    src, out = tmp_path / "in.bin", tmp_path / "out.npy"
    src.write_bytes(data)
    proc = subprocess.run(
        [sys.executable, "-c", _DECODE_IN_CHILD, str(src), str(out)], capture_output=True, text=True, timeout=120
    )
    samples = np.load(out) if out.exists() else None
    return proc.returncode, proc.stdout.strip() + proc.stderr[-2000:], samples


def _multichannel(
    fmt: str, codec: str, channels: int, rate: int = 16000, seconds: float = 0.5
) -> tuple[bytes, np.ndarray]:
    """A file whose channel k carries a tone of its own; returns it and the expected mono mix (the mean)."""
    t = np.arange(int(rate * seconds)) / rate
    planes = np.stack([0.05 * (k + 1) * np.sin(2 * np.pi * (200 + 60 * k) * t) for k in range(channels)]).astype(
        np.float32
    )
    layout = {3: "3.0", 6: "5.1", 7: "6.1", 8: "7.1"}[channels]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        # Packed samples: PyAV mishandles planar frames of 8 or more channels (the bug this guards against).
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planes.T).reshape(1, -1), format="flt", layout=layout)
        frame.sample_rate = rate
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout=layout, rate=rate)
        for chunk in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(chunk):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue(), planes.mean(axis=0)


def _wav_with_channels(channels: int, frames: int = 375) -> bytes:
    """A small PCM WAV with any channel count (the 6 KB attack file had 8)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(2)
        writer.setframerate(16000)
        writer.writeframes(
            (np.random.default_rng(channels).standard_normal(frames * channels) * 1000).astype("<i2").tobytes()
        )
    return buffer.getvalue()


@pytest.mark.parametrize("channels", [3, 6, 7, 8])
@pytest.mark.parametrize(
    "fmt,codec",
    [
        ("wav", "pcm_s16le"),
        ("flac", "flac"),
        ("ogg", "libopus"),
        ("webm", "libopus"),
        ("mp4", "aac"),
        ("w64", "pcm_f32le"),
    ],
)
def test_multichannel_audio_in_every_container_decodes_to_the_channel_mean(tmp_path, fmt, codec, channels):
    data, expected = _multichannel(fmt, codec, channels)
    code, output, samples = _decode_in_child(data, tmp_path)
    assert code == 0, output
    assert output.startswith("decoded"), output
    n = min(len(expected), len(samples)) - 4000  # lossy codecs delay and smear the first and last frames
    corr = np.corrcoef(expected[2000:n], samples[2000:n])[0, 1] if fmt in {"wav", "flac", "w64"} else None
    if corr is not None:
        assert corr > 0.99
        assert np.sqrt(np.mean(samples[2000:n] ** 2)) == pytest.approx(
            np.sqrt(np.mean(expected[2000:n] ** 2)), rel=0.05
        )
    else:  # lossy multichannel codecs remix a little: the mix is still the same loudness, not +3 dB or silence
        assert np.sqrt(np.mean(samples**2)) == pytest.approx(np.sqrt(np.mean(expected**2)), rel=0.35)


@pytest.mark.parametrize("channels", [8, 9, 10, 16, 33, 63])
def test_small_wav_with_many_channels_never_crashes_the_decoder(tmp_path, channels):
    code, output, _ = _decode_in_child(_wav_with_channels(channels), tmp_path)
    assert code == 0, f"decoder process died with {code}: {output}"
    if channels <= audio_mod.MAX_CHANNELS:
        assert output.startswith("decoded 375"), output
    else:
        assert output == f"refused could not decode audio: {channels} channels is not supported (1 to 8)"
