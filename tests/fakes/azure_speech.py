"""A local server speaking Azure Speech's synthesis WebSocket protocol (USP) well enough for the SDK.

The SDK (SpeechConfig(subscription=..., host="ws://127.0.0.1:PORT")) opens
/cognitiveservices/websocket/v1 with header Ocp-Apim-Subscription-Key, sends text frames
`speech.config`, `synthesis.context` and `ssml` (each: header lines, blank line, body), and expects
`turn.start`, binary `audio` frames (2-byte big-endian header length, headers, raw PCM) and `turn.end`.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from xml.sax.saxutils import unescape

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Response

SAMPLE_RATE = 24_000


@dataclass
class FakeAzure:
    """Server state: accepted key, what arrived, and a mode (ok, error)."""

    key: str
    mode: str = "ok"
    connections: list[dict] = field(default_factory=list)
    ssml: list[str] = field(default_factory=list)
    contexts: list[dict] = field(default_factory=list)
    host: str = ""

    def reset(self, mode: str = "ok") -> None:
        """Forget what arrived and switch behaviour."""
        self.connections.clear()
        self.ssml.clear()
        self.contexts.clear()
        self.mode = mode


def _parse(frame: str) -> tuple[dict[str, str], str]:
    """(headers, body) of a USP text frame."""
    head, _, body = frame.partition("\r\n\r\n")
    headers = {}
    for line in head.split("\r\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers, body


def _text_frame(path: str, request_id: str, body: dict) -> str:
    stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return (
        f"X-RequestId:{request_id}\r\nContent-Type:application/json; charset=utf-8\r\n"
        f"X-Timestamp:{stamp}\r\nPath:{path}\r\n\r\n{json.dumps(body)}"
    )


def _audio_frame(request_id: str, pcm: bytes) -> bytes:
    header = f"X-RequestId:{request_id}\r\nContent-Type:audio/x-wav\r\nPath:audio\r\n".encode()
    return len(header).to_bytes(2, "big") + header + pcm


def tone(text: str) -> bytes:
    """Raw 24 kHz PCM16 whose length grows with the text (50 ms per character of silence)."""
    return b"\x00\x00" * int(SAMPLE_RATE * 0.05 * max(1, len(text)))


def _handler(state: FakeAzure):
    async def handle(ws: ServerConnection) -> None:
        state.connections.append({"path": ws.request.path, "headers": dict(ws.request.headers)})
        async for frame in ws:
            if not isinstance(frame, str):
                continue
            headers, body = _parse(frame)
            path = headers.get("path")
            if path == "synthesis.context":
                state.contexts.append(json.loads(body))
            if path != "ssml":
                continue
            state.ssml.append(body)
            request_id = headers.get("x-requestid", "")
            await ws.send(_text_frame("turn.start", request_id, {"context": {"serviceTag": "fake"}}))
            if state.mode == "error":
                # What the service does on a bad request: close with a policy error.
                await ws.close(1007, "Invalid SSML")
                return
            text = unescape(re.sub(r"<[^>]+>", "", body))
            pcm = tone(text)
            for start in range(0, len(pcm), 8192):
                await ws.send(_audio_frame(request_id, pcm[start : start + 8192]))
            await ws.send(_text_frame("turn.end", request_id, {}))

    return handle


def _check_key(state: FakeAzure):
    def process_request(ws: ServerConnection, request) -> Response | None:
        if request.headers.get("Ocp-Apim-Subscription-Key") != state.key:
            return Response(401, "Unauthorized", Headers({"Content-Length": "0"}), b"")
        return None

    return process_request


def start() -> tuple[FakeAzure, threading.Thread]:
    """Serve on a free port in a daemon thread; `state.host` is the SDK's host (ws://127.0.0.1:PORT)."""
    state = FakeAzure(key="azure-test-key")
    ready = threading.Event()

    async def main() -> None:
        async with serve(
            _handler(state), "127.0.0.1", 0, subprotocols=["USP"], process_request=_check_key(state)
        ) as server:
            state.host = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            ready.set()
            await asyncio.Future()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    ready.wait(10)
    return state, thread
