"""Live recognition over the WebSocket: real-time frames, partials, endpointing, silence, limits."""

import io
import itertools
import json
import time
import wave

import numpy as np
import pytest
import requests
import websocket

from devstack.turns import ask
from tests.support import new_session, piper_take, shared_file, word_error_rate
from voiceapp.audio import decode

pytestmark = pytest.mark.usefixtures("demo_kb")
FRAME = 320  # 20 ms at 16 kHz


def _pcm(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def _stream(ws, pcm: bytes, real_time: bool) -> None:
    start = time.monotonic()
    for i, offset in enumerate(range(0, len(pcm), FRAME * 2)):
        ws.send_binary(pcm[offset : offset + FRAME * 2])
        if real_time:
            time.sleep(max(0.0, start + (i + 1) * 0.02 - time.monotonic()))


def _until(ws, kinds=("done", "error")):
    events = []
    while True:
        event = json.loads(ws.recv())
        events.append(event)
        if event["type"] in kinds and event.get("seq") is not None:
            return events


def _connect(base, session, **params):
    query = "&".join(f"{k}={v}" for k, v in {"token": session["token"], **params}.items())
    return websocket.create_connection(f"{base}/api/v1/voice/ws/{session['session_id']}?{query}", timeout=90)


def test_real_time_stream_gives_partials_then_the_offline_transcript(live):
    audio = shared_file("jfk.flac").read_bytes()
    session = new_session(live.base_url, "demo")
    offline = ask(live.base_url, session, audio)["transcript"]

    ws = _connect(live.ws_url, session, mode="push_to_talk")
    try:
        _stream(ws, _pcm(decode(audio, live.settings).samples), real_time=True)
        ws.send(json.dumps({"type": "end"}))
        events = _until(ws)
    finally:
        ws.close()
    transcripts = [e for e in events if e["type"] == "transcript"]
    partials = [e for e in transcripts if not e["final"]]
    finals = [e for e in transcripts if e["final"]]
    assert len(finals) == 1 and transcripts[-1] is finals[0]
    assert len(partials) >= 2, "words appear while the visitor speaks"
    assert word_error_rate(offline, finals[0]["text"]) <= 0.1, (offline, finals[0]["text"])
    assert events[-1]["type"] == "done" and events[-1]["status"] == "done"


def test_hands_free_pause_ends_the_utterance_without_end(live):
    question = piper_take(live.settings, "What time do you open on Saturday?")
    with wave.open(io.BytesIO(question.audio)) as wav:
        rate = wav.getframerate()
    speech = decode(question.audio, live.settings).samples
    assert rate > 0 and len(speech)
    pcm = _pcm(np.concatenate([np.zeros(8000, np.float32), speech, np.zeros(16000 * 3, np.float32)]))
    session = new_session(live.base_url, "demo")
    ws = _connect(live.ws_url, session)
    try:
        _stream(ws, pcm, real_time=True)  # no {"type": "end"}: the server hears the pause
        events = _until(ws)
    finally:
        ws.close()
    final = [e for e in events if e["type"] == "transcript" and e["final"]]
    assert final and "saturday" in final[0]["text"].lower()
    assert next(e for e in events if e["type"] == "reply")["text"]
    assert events[-1]["status"] == "done"


def test_silence_makes_no_turn(live):
    session = new_session(live.base_url, "demo")
    ws = _connect(live.ws_url, session, mode="push_to_talk")
    try:
        noise = (np.random.default_rng(7).standard_normal(16000 * 2) * 0.002).astype(np.float32)
        _stream(ws, _pcm(noise), real_time=False)
        ws.send(json.dumps({"type": "end"}))
        events = _until(ws)
    finally:
        ws.close()
    assert events[-1]["type"] == "done" and events[-1]["status"] == "no_speech"
    assert not [e for e in events if e["type"] in ("reply", "audio")]
    collection = live.db[live.settings.interactions_collection]
    assert collection.count_documents({"session_id": session["session_id"]}) == 0


def test_too_long_utterance_is_refused_and_the_session_goes_on(front):
    app = front(audio_max_duration=1.0)
    session = requests.post(f"{app.base_url}/api/v1/voice/sessions", json={"project": "demo"}, timeout=10).json()
    ws = _connect(app.ws_url, session)
    try:
        _stream(ws, b"\x01\x00" * 16000 * 2, real_time=False)  # 2 s > 1 s
        errors = []
        while not errors:
            event = json.loads(ws.recv())
            if event["type"] == "error":
                errors.append(event)
        assert errors[0]["code"] == "audio_too_long" and errors[0]["seq"] is None
        ws.send(json.dumps({"type": "ping"}))
        while (event := json.loads(ws.recv()))["type"] != "pong":
            assert event["type"] in ("status", "error")
    finally:
        ws.close()


def test_a_silent_open_microphone_stops_being_listened_to(live):
    session = new_session(live.base_url, "demo")
    ws = _connect(live.ws_url, session)  # hands-free, never sends `end`
    try:
        quiet = np.random.default_rng(3).standard_normal(int(16000 * (live.settings.listen_timeout + 1))) * 0.002
        _stream(ws, _pcm(quiet.astype(np.float32)), real_time=False)
        events = _until(ws)
    finally:
        ws.close()
    assert events[-1]["type"] == "done" and events[-1]["status"] == "no_speech"
    assert not [e for e in events if e["type"] in ("transcript", "reply")]


def _paused_sentence(settings, pause_s: float) -> tuple[np.ndarray, str]:
    """A Piper sentence whose comma is stretched into a `pause_s` pause, ending 0.1 s after its last word."""
    text = "I was wondering, whether you deliver to my office."
    speech = decode(piper_take(settings, text).audio, settings).samples
    energy = np.sqrt(np.convolve(speech**2, np.ones(320) / 320, mode="same"))
    loud = np.flatnonzero(energy >= 0.01)
    gaps = [(a, b) for a, b in itertools.pairwise(loud) if b - a > 320 and a > 0.15 * speech.size]
    start, end = gaps[0]
    audio = np.concatenate([np.zeros(8000, np.float32), speech[:start], np.zeros(int(pause_s * 16000), np.float32)])
    return np.concatenate([audio, speech[end : loud[-1] + 1600]]), text


@pytest.mark.parametrize("mode", ["push_to_talk", "hands_free"])
def test_a_speculation_dropped_at_an_inner_pause_reaches_the_client_as_nothing_final(live, mode):
    # The pause is long enough for a speculative decode of the first half; speech goes on after it.
    audio, text = _paused_sentence(live.settings, 0.7)
    tail = np.zeros(16000 * (0 if mode == "push_to_talk" else 3), np.float32)
    session = new_session(live.base_url, "demo")
    ws = _connect(live.ws_url, session, mode=mode)
    try:
        _stream(ws, _pcm(np.concatenate([audio, tail])), real_time=True)
        if mode == "push_to_talk":
            ws.send(json.dumps({"type": "end"}))
        events = _until(ws)
    finally:
        ws.close()
    finals = [e for e in events if e["type"] == "transcript" and e["final"]]
    assert len(finals) == 1, [e.get("text") for e in finals]
    assert word_error_rate(text, finals[0]["text"]) <= 0.2 and "office" in finals[0]["text"].lower(), finals
    assert len([e for e in events if e["type"] == "reply"]) == 1
    assert events[-1]["type"] == "done" and events[-1]["status"] == "done"


def test_a_live_turn_keeps_its_recording(live):
    # The recording is stored after the turn is handed to dialog: it must still end up under the id the turn names.
    from voiceapp.errors import NotFound
    from voiceapp.storage.audio import UPLOADS_BUCKET, get_audio

    audio, _ = _paused_sentence(live.settings, 0.3)
    session = new_session(live.base_url, "demo")
    ws = _connect(live.ws_url, session, mode="push_to_talk")
    try:
        _stream(ws, _pcm(audio), real_time=False)
        ws.send(json.dumps({"type": "end"}))
        events = _until(ws)
    finally:
        ws.close()
    assert events[-1]["status"] == "done"
    turn = live.db[live.settings.interactions_collection].find_one({"turn_id": events[-1]["turn_id"]})
    deadline = time.monotonic() + 10
    while True:
        try:
            data = get_audio(live.db, turn["upload_id"], bucket=UPLOADS_BUCKET)[0]
            break
        except NotFound:
            assert time.monotonic() < deadline, "the recording was never stored"
            time.sleep(0.05)
    stored = decode(data, live.settings).samples
    assert abs(stored.size - audio.size) <= 1600 and turn["audio_seconds"] == round(audio.size / 16000, 3)


# ---------------------------------------------------------------- speculative reply (issue 15)


def _listening_turn(ws) -> str:
    """The id of the utterance under way, from its `listening` status event."""
    while True:
        event = json.loads(ws.recv())
        if event["type"] == "status" and event.get("status") == "listening":
            return event["turn_id"]


def _prepared(client, turn_id: str, ws, push_to_talk: bool) -> dict:
    """The utterance's preparations (speculative words -> state), once one is ready (or time is up).

    Push-to-talk may wait as long as it takes (a held button, kept alive by a silent frame now and then); hands-free
    stops sending for less than AUDIO_FRAME_GAP_TIMEOUT (the utterance must not end) and then goes on regardless.
    """
    deadline = time.monotonic() + (30.0 if push_to_talk else 2.5)
    while True:
        found = {k.decode(): json.loads(v) for k, v in client.hgetall(f"voice:prepared:{turn_id}").items()}
        if any(e["state"] == "ready" for e in found.values()) or time.monotonic() > deadline:
            return found
        if push_to_talk:
            ws.send_binary(bytes(FRAME * 2))
        time.sleep(0.5 if push_to_talk else 0.05)


def _spoken_with_a_pause(live, first: str, then: str | None, mode: str) -> tuple[list[dict], dict, dict]:
    """Say `first`, pause (0.6 s: a speculation, before the endpoint) until its reply is prepared, then say `then`
    (or nothing) until the turn ends; the client's events, the preparations and the turn."""
    import redis

    from voiceapp.tts import cache

    cache.remove(live.db, live.settings, {})  # earlier tests may have spoken these replies
    speech = decode(piper_take(live.settings, first).audio, live.settings).samples
    rest = decode(piper_take(live.settings, then).audio, live.settings).samples if then else np.zeros(0, np.float32)
    client = redis.Redis.from_url(live.settings.redis_url)
    session = new_session(live.base_url, "demo")
    ws = _connect(live.ws_url, session, mode=mode)
    try:
        _stream(ws, _pcm(np.concatenate([np.zeros(8000, np.float32), speech, np.zeros(9600, np.float32)])), True)
        turn_id = _listening_turn(ws)
        prepared = _prepared(client, turn_id, ws, push_to_talk=mode == "push_to_talk")
        tail = np.zeros(16000 * (0 if mode == "push_to_talk" else 3), np.float32)
        _stream(ws, _pcm(np.concatenate([rest, tail])), real_time=True)
        if mode == "push_to_talk":
            ws.send(json.dumps({"type": "end"}))
        events = _until(ws)
    finally:
        ws.close()
    turn = live.db[live.settings.interactions_collection].find_one({"turn_id": turn_id})
    return events, prepared, turn


def test_a_hands_free_turn_speaks_the_reply_prepared_at_its_pause(live):
    events, prepared, turn = _spoken_with_a_pause(live, "What time do you open on Saturday?", None, "hands_free")
    final = [e for e in events if e["type"] == "transcript" and e["final"]]
    assert len(final) == 1 and list(prepared) == [final[0]["text"]], (prepared, final)
    audio = [e for e in events if e["type"] == "audio"]
    assert audio[0]["cached"], "the first sentence was in the cache before the turn's TTS stage"
    assert turn["tts"]["prepared"] == "used" and events[-1]["status"] == "done"


def test_words_after_the_pause_get_only_their_own_reply(live):
    # Held button: the pause lasts until the first words' reply is surely prepared (hands-free ends it at 0.8 s).
    first, then = "Do you sell helicopters?", "What time do you open on Saturday?"
    events, prepared, turn = _spoken_with_a_pause(live, first, then, "push_to_talk")
    assert [e["state"] for e in prepared.values()] == ["ready"], prepared
    final = [e for e in events if e["type"] == "transcript" and e["final"]]
    assert len(final) == 1 and "saturday" in final[0]["text"].lower() and final[0]["text"] not in prepared
    replies = [e for e in events if e["type"] == "reply"]
    assert [r["text"] for r in replies] == [turn["reply_text"]]
    spoken = [e["text"] for e in events if e["type"] == "audio"]
    assert spoken == [c["text"] for c in turn["tts"]["events"]]
    assert next(iter(prepared.values()))["first"] not in spoken, "the prepared reply stayed unsaid"
    assert turn["tts"]["prepared"] == "dropped" and events[-1]["status"] == "done"
