"""A local server speaking the ElevenLabs text-to-speech HTTP API (POST /v1/text-to-speech/{voice_id})."""

from __future__ import annotations

import io
import json
import threading
import time
import wave
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

# What mp3_* answers look like on the wire (an ID3 tag then MPEG frames); the content is never decoded.
FAKE_MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + b"\x00" * 400


def wav_silence(rate: int, seconds: float = 0.2) -> bytes:
    """A short silent mono PCM16 WAV."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(b"\x00\x00" * int(rate * seconds))
    return buffer.getvalue()


@dataclass
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict
    headers: dict
    body: dict


@dataclass
class FakeElevenLabs:
    """Server state: the accepted key, recorded requests and a mode (ok, error, slow, stall, quota)."""

    api_key: str
    mode: str = "ok"
    delay: float = 0.0
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""

    def reset(self, mode: str = "ok", delay: float = 0.0) -> None:
        """Forget requests and switch behaviour."""
        self.requests.clear()
        self.mode, self.delay = mode, delay


def _handler(state: FakeElevenLabs):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def do_POST(self) -> None:
            parsed = urlparse(self.path)
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw or b"{}")
            state.requests.append(
                Recorded(
                    "POST",
                    parsed.path,
                    {k: v[0] for k, v in parse_qs(parsed.query).items()},
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
            )
            if not parsed.path.startswith("/v1/text-to-speech/"):
                return self._json(404, {"detail": {"status": "not_found", "message": "no such route"}})
            if self.headers.get("xi-api-key") != state.api_key:
                return self._json(401, {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}})
            if state.mode == "error":
                return self._json(500, {"detail": {"status": "internal_error", "message": "boom"}})
            if state.mode == "quota":
                return self._json(401, {"detail": {"status": "quota_exceeded", "message": "quota exceeded"}})
            if state.mode == "slow":
                time.sleep(state.delay)
            if state.mode == "stall":
                return self._stall(FAKE_MP3)
            fmt = parse_qs(parsed.query).get("output_format", ["mp3_44100_128"])[0]
            if fmt.startswith("wav_"):
                return self._audio("audio/wav", wav_silence(int(fmt.split("_")[1])))
            return self._audio("audio/mpeg", FAKE_MP3)

        def _audio(self, content_type: str, data: bytes) -> None:
            try:
                self.send_response(200)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                pass

        def _stall(self, data: bytes) -> None:
            """Headers and half the body, then silence for `delay` seconds: a vendor hanging mid-stream."""
            try:
                self.send_response(200)
                self.send_header("content-type", "audio/mpeg")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                time.sleep(state.delay)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _json(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def start(api_key: str) -> tuple[FakeElevenLabs, ThreadingHTTPServer]:
    """Serve on a free 127.0.0.1 port in a daemon thread; `state.url` is the SDK's base_url."""
    state = FakeElevenLabs(api_key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return state, server
