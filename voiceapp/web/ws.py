"""WebSocket relay: PCM16 frames in, session events out. The pipeline never knows this transport."""
from __future__ import annotations

import json
import logging
import threading
from typing import Any

from flask import Blueprint, Flask, current_app, request
from flask_sock import Sock
from simple_websocket import ConnectionClosed

from ..audio import pcm16_to_float
from ..errors import AudioTooLong, BadRequest, LimitExceeded, VoiceError
from ..models import DecodedAudio
from ..pipeline import interrupt, start_turn
from ..runtime import Runtime
from ..storage import sessions
from . import access
from .auth import check_token
from .hub import Listener, get_hub
from .origins import check_origin

log = logging.getLogger(__name__)

bp = Blueprint("voice_ws", __name__, url_prefix="/api/v1/voice")
sock = Sock()

POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013
# Hard cap on one WebSocket message: larger ones close the socket (1009) before they are buffered.
HARD_MESSAGE_LIMIT = 4 * 1024 * 1024


class ConnectionCounter:
    """Open WebSockets of this process, capped at WS_MAX_CONNECTIONS."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def enter(self, limit: int) -> None:
        """Count one more connection or raise LimitExceeded."""
        with self._lock:
            if self.count >= limit:
                raise LimitExceeded(f"this server holds its maximum of {limit} voice connections; retry shortly",
                                    code="too_many_connections", status=503)
            self.count += 1

    def leave(self) -> None:
        """Count one connection less."""
        with self._lock:
            self.count -= 1


connections = ConnectionCounter()


class Connection:
    """One client socket: a lock so the event relay and the receive loop never interleave frames."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.turn_id: str | None = None

    def send(self, message: dict[str, Any]) -> None:
        """Send one JSON message; a dead peer just marks the connection closed."""
        try:
            with self.lock:
                self.ws.send(json.dumps(message))
        except (ConnectionClosed, OSError):
            self.closed.set()

    def error(self, err: VoiceError) -> None:
        """An error about this connection's own input (not a session event)."""
        self.send({"type": "error", "seq": None, **err.to_dict()})


def _relay(conn: Connection, listener: Listener) -> None:
    while not conn.closed.is_set():
        event = listener.get(timeout=1.0)
        if event is not None:
            conn.send(event.to_dict())


def _int_arg(name: str) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise BadRequest(f"'{name}' must be a non-negative integer", code="invalid_field")
    return int(raw)


class Utterance:
    """PCM16 mono frames of the utterance being spoken, within AUDIO_MAX_DURATION."""

    def __init__(self, sample_rate: int, max_seconds: float) -> None:
        self.sample_rate = sample_rate
        self.max_bytes = int(max_seconds * sample_rate) * 2
        self.buffer = bytearray()

    def add(self, frame: bytes) -> None:
        """Append a frame; past the limit the utterance is dropped and AudioTooLong raised."""
        if len(self.buffer) + len(frame) > self.max_bytes:
            self.buffer.clear()
            raise AudioTooLong(f"utterance longer than {self.max_bytes // 2 / self.sample_rate:.0f} s; "
                               "it was discarded, speak again")
        self.buffer.extend(frame)

    def take(self) -> DecodedAudio:
        """The utterance as decoded audio; the buffer starts empty again."""
        samples = pcm16_to_float(bytes(self.buffer))
        self.buffer.clear()
        return DecodedAudio(samples=samples, sample_rate=self.sample_rate)


def _handle_text(rt: Runtime, conn: Connection, session_id: str, utterance: Utterance, raw: str) -> None:
    try:
        message = json.loads(raw)
    except ValueError:
        raise BadRequest("text frames must be JSON objects", code="bad_frame") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise BadRequest("a JSON message needs a string 'type'", code="bad_frame")
    kind = message["type"]
    if kind == "ping":
        conn.send({"type": "pong", "seq": None})
    elif kind == "end":
        if not utterance.buffer:
            raise BadRequest("no audio received before 'end'", code="empty_utterance")
        session = access.use_session(rt, session_id)
        access.admit_turn(rt)
        conn.turn_id = start_turn(rt, session, utterance.take(), source="ws")
        conn.send({"type": "accepted", "seq": None, "turn_id": conn.turn_id})
    elif kind == "interrupt":
        played = message.get("played_chunks")
        played = played if isinstance(played, int) and not isinstance(played, bool) and played >= 0 else None
        turn_id = message.get("turn_id") if isinstance(message.get("turn_id"), str) else conn.turn_id
        interrupt(rt, session_id, turn_id, played)
        conn.send({"type": "interrupted", "seq": None, "turn_id": turn_id})
    else:
        raise BadRequest(f"unknown message type {kind[:32]!r}", code="bad_frame")


def _serve(rt: Runtime, conn: Connection, session_id: str) -> None:
    utterance = Utterance(rt.settings.audio_sample_rate, rt.settings.audio_max_duration)
    while not conn.closed.is_set():
        try:
            frame = conn.ws.receive(timeout=1.0)
        except ConnectionClosed:
            return
        if frame is None:
            continue
        try:
            if len(frame) > rt.settings.ws_max_frame_bytes:
                raise BadRequest(f"frame of {len(frame)} bytes is over WS_MAX_FRAME_BYTES "
                                 f"({rt.settings.ws_max_frame_bytes}); send smaller frames", code="frame_too_large")
            if isinstance(frame, bytes):
                utterance.add(frame)
            else:
                _handle_text(rt, conn, session_id, utterance, frame)
        except VoiceError as err:
            conn.error(err)


@sock.route("/ws/<session_id>", bp=bp)
def session_events(ws, session_id: str) -> None:
    """Relay a session's events to the client and accept its audio."""
    rt: Runtime = current_app.extensions["voiceapp"]
    conn = Connection(ws)
    try:
        connections.enter(rt.settings.ws_max_connections)
    except LimitExceeded as err:
        conn.error(err)
        ws.close(reason=TRY_AGAIN_LATER, message=err.code)
        return
    try:
        _open(rt, conn, session_id)
    finally:
        connections.leave()


def _open(rt: Runtime, conn: Connection, session_id: str) -> None:
    try:
        check_token(rt.settings, request.args.get("token"), session_id)
        check_origin(sessions.get_session(rt.db, rt.settings, session_id)["project"])
        last_seq = _int_arg("last_seq")
    except VoiceError as err:
        conn.error(err)
        conn.ws.close(reason=POLICY_VIOLATION, message=err.code)
        return
    listener = get_hub(current_app).listen(session_id, last_seq)
    relay = threading.Thread(target=_relay, args=(conn, listener), daemon=True, name=f"ws-relay-{session_id[:8]}")
    relay.start()
    try:
        _serve(rt, conn, session_id)
    finally:
        conn.closed.set()
        listener.close()


def init_app(app: Flask) -> None:
    """Mount the WebSocket route."""
    settings = app.extensions["voiceapp"].settings
    app.config.setdefault("SOCK_SERVER_OPTIONS", {"ping_interval": settings.ws_ping_interval,
                                                  "max_message_size": max(HARD_MESSAGE_LIMIT, settings.ws_max_frame_bytes)})
    sock.init_app(app)
    app.register_blueprint(bp)
