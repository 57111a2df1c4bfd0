"""The same turn over the WebSocket: PCM16 frames in, ordered session events out."""

import json

import numpy as np
import pytest
import requests
import websocket

from devstack.turns import wait_turn
from tests.support import JFK_TEXT, new_session, shared_file, word_error_rate
from voiceapp.audio import decode

pytestmark = pytest.mark.usefixtures("demo_kb")

FRAME_SAMPLES = 320  # 20 ms at 16 kHz


def _pcm16_frames(live, name: str):
    audio = decode(shared_file(name).read_bytes(), live.settings)
    pcm = (np.clip(audio.samples, -1, 1) * 32767).astype("<i2").tobytes()
    step = FRAME_SAMPLES * 2
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


def _connect(live, session, **params):
    query = "&".join(f"{k}={v}" for k, v in {"token": session["token"], **params}.items())
    url = f"{live.ws_url}/api/v1/voice/ws/{session['session_id']}?{query}"
    return websocket.create_connection(url, timeout=60)


def _events_until_done(ws, turn_id=None):
    events = []
    while True:
        message = json.loads(ws.recv())
        events.append(message)
        ended = message["type"] in ("done", "error") and message.get("seq") is not None
        if ended and (turn_id is None or message.get("turn_id") == turn_id):
            return events


def test_pcm16_frames_give_ordered_events(live):
    session = new_session(live.base_url, "demo")
    ws = _connect(live, session, mode="push_to_talk")
    try:
        for frame in _pcm16_frames(live, "jfk.flac"):
            ws.send_binary(frame)
        ws.send(json.dumps({"type": "end"}))
        events = _events_until_done(ws)
    finally:
        ws.close()
    accepted = [e for e in events if e["type"] == "accepted"]
    assert len(accepted) == 1
    turn_events = [e for e in events if e.get("seq") is not None]
    settled = [e for e in turn_events if not (e["type"] == "transcript" and not e["final"])]
    kinds = [e["type"] for e in settled]
    assert kinds == ["status", "transcript", "reply", "audio", "done"], kinds
    assert settled[0]["status"] == "listening"
    seqs = [e["seq"] for e in turn_events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(e["turn_id"] == accepted[0]["turn_id"] for e in turn_events)
    transcript = settled[1]
    assert transcript["final"] is True
    assert word_error_rate(JFK_TEXT, transcript["text"]) <= 0.15, transcript["text"]
    audio_url = settled[3]["audio_url"]
    reply_audio = requests.get(f"{live.base_url}{audio_url}", params={"token": session["token"]}, timeout=10)
    assert reply_audio.status_code == 200 and reply_audio.content[:4] == b"RIFF"


def test_bad_frames_get_errors_and_the_socket_stays_usable(live):
    session = new_session(live.base_url, "demo")
    ws = _connect(live, session)
    try:
        ws.send("this is not json")
        assert json.loads(ws.recv())["code"] == "bad_frame"
        ws.send(json.dumps({"type": "launch-missiles"}))
        assert json.loads(ws.recv())["code"] == "bad_frame"
        ws.send(json.dumps({"type": "end"}))
        assert json.loads(ws.recv())["code"] == "empty_utterance"
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.recv())["type"] == "pong"
    finally:
        ws.close()


def test_wrong_token_closes_the_socket_with_a_reason(live):
    a = new_session(live.base_url, "demo")
    b = new_session(live.base_url, "demo")
    ws = _connect(live, {"session_id": b["session_id"], "token": a["token"]})
    try:
        message = json.loads(ws.recv())
        assert message["type"] == "error" and message["code"] == "token_wrong_session"
        opcode, data = ws.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(data[:2], "big") == 1008
    finally:
        ws.close()


def test_reconnect_with_last_seq_replays_missed_events(live):
    session = new_session(live.base_url, "demo")
    ws = _connect(live, session, mode="push_to_talk")
    for frame in _pcm16_frames(live, "jfk.flac"):
        ws.send_binary(frame)
    ws.send(json.dumps({"type": "end"}))
    first = json.loads(ws.recv())
    while first["type"] != "accepted":
        first = json.loads(ws.recv())
    ws.close()  # drop before the turn's events arrive
    assert wait_turn(live.base_url, session, first["turn_id"])["status"] == "done"
    again = _connect(live, session, last_seq=0)
    try:
        events = _events_until_done(again, first["turn_id"])
    finally:
        again.close()
    settled = [e["type"] for e in events if not (e["type"] == "transcript" and not e["final"])]
    assert settled == ["status", "transcript", "reply", "audio", "done"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
