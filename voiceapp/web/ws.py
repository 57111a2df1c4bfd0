"""WebSocket relay: PCM16 frames in (to a live utterance in Redis), session events out.

The pipeline never knows this transport: frames go to an utterance stream an STT worker reads,
and whatever the stages publish comes back through the event hub.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any

import numpy as np
from flask import Blueprint, Flask, current_app, request
from flask_sock import Sock
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError
from simple_websocket import ConnectionClosed

from ..bargein import interrupt
from ..errors import AudioTooLong, BadRequest, LimitExceeded, StorageUnavailable, VoiceError
from ..events import clock_seq
from ..pipeline import start_live_utterance, start_text_turn
from ..runtime import Runtime
from ..storage import projects, sessions
from ..utterances import HANDS_FREE, MODES, UtteranceLost, UtteranceStream, new_id
from . import access
from .admission import WebSocketSlots, utterance_rate
from .auth import check_token
from .hub import Listener, get_hub
from .origins import check_origin
from .ratelimit import hit_turn_limits
from .safejson import loads
from .textinput import check_text

log = logging.getLogger(__name__)

bp = Blueprint("voice_ws", __name__, url_prefix="/api/v1/voice")
sock = Sock()

POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013
# Hard cap on one WebSocket message: larger ones close the socket (1009) before they are buffered.
HARD_MESSAGE_LIMIT = 4 * 1024 * 1024
# A frame quieter than this RMS (about -54 dBFS) counts as silence for the wall-clock silence limit.
VOICED_RMS = 64.0
# How often a live socket renews its lease in Redis (the lease lasts admission.WS_LEASE_S).
LEASE_RENEW_S = 20.0
# A typed question; `text_input` is the name the seed product's clients use.
TEXT_MESSAGES = ("text", "text_input")


class ConnectionCounter:
    """Open WebSockets of this process, capped at WS_MAX_CONNECTIONS."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def enter(self, limit: int) -> None:
        """Count one more connection or raise LimitExceeded."""
        with self._lock:
            if self.count >= limit:
                raise LimitExceeded(
                    f"this server holds its maximum of {limit} voice connections; retry shortly",
                    code="too_many_connections",
                    status=503,
                )
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
        self.utterance: LiveUtterance | None = None
        self.mode = HANDS_FREE

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
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):  # int() of 5,000 digits raises; '²' isdigit
        raise BadRequest(f"'{name}' must be a non-negative integer below 10**18", code="invalid_field")
    return int(raw)


def _voiced(frame: bytes) -> bool:
    """Whether a PCM16 frame holds more than near-digital silence."""
    samples = np.frombuffer(frame, dtype="<i2").astype(np.float32)
    return bool(samples.size) and float(np.sqrt(np.mean(samples * samples))) > VOICED_RMS


class LiveUtterance:
    """The utterance this connection is streaming: frames go to Redis, an STT worker listens."""

    def __init__(self, rt: Runtime, session_id: str) -> None:
        self.stream = UtteranceStream(rt.redis, new_id(), ttl=int(rt.settings.audio_max_duration) + 600)
        self.bytes = 0
        self.max_bytes = int(rt.settings.audio_max_duration * rt.settings.audio_sample_rate) * 2
        self.max_seconds = rt.settings.audio_max_duration
        self.settings = rt.settings
        self.started = self.last_frame = self.last_voice = time.monotonic()
        self.heard_voice = False

    def add(self, frame: bytes) -> bool:
        """Append a frame; False when the worker already ended this utterance (a pause was heard)."""
        if self.bytes + len(frame) > self.max_bytes:
            self.stream.abort()
            raise AudioTooLong(
                f"utterance longer than {self.max_seconds:.0f} s (AUDIO_MAX_DURATION); it was discarded, speak again"
            )
        if not self.stream.append(frame, continuing=self.bytes > 0):
            return False
        self.bytes += len(frame)
        self.last_frame = time.monotonic()
        if _voiced(frame):
            self.last_voice, self.heard_voice = self.last_frame, True
        return True

    def overdue(self, now: float) -> str | None:
        """Why this utterance must end now (it holds an STT slot), or None.

        Wall-clock limits, whatever the mode: push-to-talk never ends on a pause by itself, so a client
        trickling silence would otherwise hold a recognition slot for as long as it likes.
        """
        if now - self.last_frame > self.settings.frame_gap_timeout:
            return f"no audio for {self.settings.frame_gap_timeout:g} s (AUDIO_FRAME_GAP_TIMEOUT)"
        if now - self.last_voice > self.settings.listen_timeout:
            return f"only silence for {self.settings.listen_timeout:g} s (AUDIO_LISTEN_TIMEOUT)"
        if now - self.started > self.max_seconds + self.settings.frame_gap_timeout:
            return f"utterance open for more than {self.max_seconds:g} s (AUDIO_MAX_DURATION)"
        return None

    def finish(self) -> None:
        """End the utterance: recognise what was heard, or discard it when it was only silence."""
        if self.heard_voice:
            self.stream.end(continuing=True)
        else:
            self.stream.abort()


def _is_json(frame: bytes) -> bool:
    try:
        return isinstance(json.loads(frame), dict)
    except (ValueError, RecursionError):
        return False


def _handle_audio(rt: Runtime, conn: Connection, session_id: str, frame: bytes) -> None:
    if len(frame) % 2:
        raise BadRequest("binary frames must hold whole PCM16 samples (an even number of bytes)", code="bad_frame")
    if frame[:1] == b"{" and frame[-1:] == b"}" and _is_json(frame):
        raise BadRequest("binary frames carry audio; send JSON messages as text frames", code="bad_frame")
    if conn.utterance is not None:
        try:
            if conn.utterance.add(frame):
                return
        except (AudioTooLong, UtteranceLost):
            conn.utterance = None
            raise
    # A new utterance: the session must be live, within its rate, and the pipeline not overloaded.
    session = access.use_session(rt, session_id)
    utterance_rate(rt).hit(session_id, session["project"])
    access.admit_turn(rt)
    conn.utterance = LiveUtterance(rt, session_id)
    start_live_utterance(rt, session_id, conn.utterance.stream.id, conn.mode)
    conn.utterance.add(frame)


def _text_turn(rt: Runtime, session_id: str, value: Any) -> str:
    """A typed question: checked, counted against the session and rate limits, then answered like speech."""
    text = check_text(value, rt.settings)
    session = access.use_session(rt, session_id)
    access.admit_turn(rt)
    hit_turn_limits(session["project"])
    return start_text_turn(rt, session, text)


def _handle_text(rt: Runtime, conn: Connection, session_id: str, raw: str) -> None:
    try:
        message = loads(raw)
    except BadRequest:
        raise BadRequest("text frames must be JSON objects (not nested absurdly deep)", code="bad_frame") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise BadRequest("a JSON message needs a string 'type'", code="bad_frame")
    kind = message["type"]
    if kind == "ping":
        conn.send({"type": "pong", "seq": None})
    elif kind == "end":
        if conn.utterance is None:
            raise BadRequest("no audio received before 'end'", code="empty_utterance")
        conn.turn_id = conn.utterance.stream.id
        utterance, conn.utterance = conn.utterance, None
        utterance.stream.end(continuing=True)  # already ended by a pause: then this is a no-op
        conn.send({"type": "accepted", "seq": None, "turn_id": conn.turn_id})
    elif kind in TEXT_MESSAGES:
        conn.turn_id = _text_turn(rt, session_id, message.get("text"))
        conn.send({"type": "accepted", "seq": None, "turn_id": conn.turn_id})
    elif kind == "interrupt":
        played = message.get("played_chunks")
        played = played if isinstance(played, int) and not isinstance(played, bool) and played >= 0 else None
        turn_id = message.get("turn_id") if isinstance(message.get("turn_id"), str) else conn.turn_id
        interrupt(rt, session_id, turn_id, played)
        conn.send({"type": "interrupted", "seq": None, "turn_id": turn_id})
    else:
        raise BadRequest(f"unknown message type {kind[:32]!r}", code="bad_frame")


def _end_overdue(conn: Connection) -> None:
    """Close the live utterance when it broke a wall-clock limit, and tell the client why."""
    utterance = conn.utterance
    reason = utterance.overdue(time.monotonic()) if utterance is not None else None
    if utterance is None or reason is None:
        return
    conn.utterance, conn.turn_id = None, utterance.stream.id
    utterance.finish()
    conn.send(
        {
            "type": "error",
            "seq": None,
            "turn_id": utterance.stream.id,
            "code": "utterance_timeout",
            "message": f"the utterance was ended: {reason}",
        }
    )


def _serve(rt: Runtime, conn: Connection, session_id: str, lease) -> None:
    renewed = time.monotonic()
    while not conn.closed.is_set():
        try:
            frame = conn.ws.receive(timeout=1.0)
        except ConnectionClosed:
            return
        try:
            _end_overdue(conn)
            if time.monotonic() - renewed > LEASE_RENEW_S:
                lease()
                renewed = time.monotonic()
        except (RedisError, PyMongoError) as err:
            log.warning("storage unavailable on a WebSocket: %s", type(err).__name__)
        if frame is None:
            continue
        try:
            if len(frame) > rt.settings.ws_max_frame_bytes:
                raise BadRequest(
                    f"frame of {len(frame)} bytes is over WS_MAX_FRAME_BYTES "
                    f"({rt.settings.ws_max_frame_bytes}); send smaller frames",
                    code="frame_too_large",
                )
            if isinstance(frame, bytes):
                _handle_audio(rt, conn, session_id, frame)
            else:
                _handle_text(rt, conn, session_id, frame)
        except VoiceError as err:
            conn.error(err)
        except (RedisError, PyMongoError) as err:
            # An outage: this utterance is lost, the socket stays; the client may resend once it passes.
            log.warning("storage unavailable on a WebSocket: %s", type(err).__name__)
            conn.utterance = None
            conn.error(StorageUnavailable("voice storage is unavailable; retry in a few seconds"))


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


def _admit(rt: Runtime, session_id: str) -> tuple[int | None, str]:
    """Check the token, origin and query of a new socket; returns (last_seq, project)."""
    check_token(rt.settings, request.args.get("token"), session_id)
    project = sessions.get_session(rt.db, rt.settings, session_id)["project"]
    check_origin(project)
    last_seq = _int_arg("last_seq")
    # Numbering restarts at the clock (microseconds) when Redis lost a counter: no real seq is above both.
    if last_seq is not None and last_seq > max(rt.events.last_seq(session_id), clock_seq()):
        raise BadRequest("'last_seq' is ahead of any event this session can have", code="invalid_field")
    return last_seq, project


def _open(rt: Runtime, conn: Connection, session_id: str) -> None:
    slots, socket_id = WebSocketSlots(rt.redis, rt.settings), uuid.uuid4().hex
    try:
        last_seq, project = _admit(rt, session_id)
        conn.mode = request.args.get("mode", HANDS_FREE)
        if conn.mode not in MODES:
            raise BadRequest(f"'mode' must be one of {', '.join(MODES)}", code="invalid_field")
        slots.acquire(socket_id, session_id, project, projects.quota(rt.db, rt.settings, project))
    except VoiceError as err:
        conn.error(err)
        busy = isinstance(err, LimitExceeded)
        conn.ws.close(reason=TRY_AGAIN_LATER if busy else POLICY_VIOLATION, message=err.code)
        return
    try:
        _relay_and_serve(rt, conn, session_id, last_seq, lambda: slots.renew(socket_id, session_id, project))
    finally:
        try:
            slots.release(socket_id, session_id, project)
        except RedisError:
            pass  # the lease runs out by itself


def _relay_and_serve(rt: Runtime, conn: Connection, session_id: str, last_seq: int | None, lease) -> None:
    listener = get_hub(current_app).listen(session_id, last_seq)
    relay = threading.Thread(target=_relay, args=(conn, listener), daemon=True, name=f"ws-relay-{session_id[:8]}")
    relay.start()
    try:
        _serve(rt, conn, session_id, lease)
    finally:
        conn.closed.set()
        listener.close()
        if conn.utterance is not None:
            conn.utterance.stream.end()  # the visitor left mid-sentence: answer what was heard


def init_app(app: Flask) -> None:
    """Mount the WebSocket route."""
    settings = app.extensions["voiceapp"].settings
    app.config.setdefault(
        "SOCK_SERVER_OPTIONS",
        {
            "ping_interval": settings.ws_ping_interval,
            "max_message_size": max(HARD_MESSAGE_LIMIT, settings.ws_max_frame_bytes),
        },
    )
    sock.init_app(app)
    app.register_blueprint(bp)
