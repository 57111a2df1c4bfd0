"""Fuzzing the front door (issue 16): random JSON bodies and query values against the REST API, random
WebSocket control frames, and random audio headers through the decoder in a separate process.

Each property is the house rule for bad input: a clear 4xx JSON error (never a 500), the socket survives,
the decoder process never dies. Hypothesis keeps each pass to a few hundred examples (a minute or two).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakes import audio_files
from voiceapp.storage.projects import create_key

API = "/api/v1/voice"
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # CI-stable; a failure names its input
)
FIELDS = ["project", "language", "voice", "documents", "source", "text", "format", "type", "turn_id", "played_chunks"]
OPERATORS = ["$ne", "$gt", "$regex", "$where", "$in", "$exists"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=80),
    st.sampled_from(["demo", "../etc/passwd", "en-US", "markdown", "ping", "end", "", "\x00", "a" * 300]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS + OPERATORS), st.text(max_size=12)), children, max_size=5),
    ),
    max_leaves=25,
)
bodies = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4).map(json.dumps),
    json_values.map(lambda v: json.dumps(v, allow_nan=True)),
    st.integers(min_value=1, max_value=5000).map(lambda n: "[" * n),
    st.text(max_size=200),
)


@pytest.fixture
def fuzz_app(front):
    """A front with limits lifted (the fuzzer is one client) and a keyed project for the knowledge endpoint."""
    app = front(
        rate_limit_ip="1000000/minute",
        rate_limit_project="1000000/minute",
        rate_limit_open_project="1000000/minute",
        rate_limit_session="1000000/minute",
        rate_limit_utterances="1000000/minute",
        open_project_max_sessions=1000,
        max_concurrent_sessions=1000,
    )
    client = app.app.test_client()
    session = client.post(f"{API}/sessions", json={"project": "demo"}).get_json()
    return app, client, session, create_key(app.db, app.settings, "fuzzkb")


def _clear(response) -> None:
    """A 2xx, or a 4xx/503 with the JSON error shape: never a 500."""
    assert response.status_code < 500 or response.status_code == 503, (response.status_code, response.data[:300])
    if response.status_code >= 400:
        error = response.get_json()["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str) and error["message"]


def test_fuzz_json_bodies_get_clear_answers(fuzz_app):
    _app, client, session, key = fuzz_app
    auth = {"Authorization": f"Bearer {session['token']}"}
    sid = session["session_id"]

    @FUZZ
    @given(body=bodies, endpoint=st.sampled_from(["sessions", "token", "knowledge", "forget"]))
    def check(body: str, endpoint: str) -> None:
        path, headers = {
            "sessions": (f"{API}/sessions", {}),
            "token": (f"{API}/sessions/{sid}/token", auth),
            "knowledge": (f"{API}/projects/fuzzkb/knowledge", {"Authorization": f"Bearer {key}"}),
            "forget": (f"{API}/projects/fuzzkb/sessions/{'0' * 32}", {"Authorization": f"Bearer {key}"}),
        }[endpoint]
        method = client.delete if endpoint == "forget" else client.post
        _clear(method(path, data=body, headers={**headers, "Content-Type": "application/json"}))

    check()
    assert client.get(f"{API}/sessions/{sid}", headers=auth).status_code == 200


def test_fuzz_query_values_get_clear_answers(fuzz_app):
    _app, client, session, _key = fuzz_app
    auth = {"Authorization": f"Bearer {session['token']}"}
    sid = session["session_id"]

    @FUZZ
    @given(value=st.one_of(st.text(max_size=60), st.integers().map(str), st.sampled_from(["9" * 3000, "1e999", "nan"])))
    def check(value: str) -> None:
        _clear(client.get(f"{API}/sessions/{sid}/history", query_string={"limit": value}, headers=auth))
        _clear(client.get(f"{API}/sessions/{sid}/turns/{'0' * 32}", query_string={"wait": value}, headers=auth))

    check()


def test_fuzz_websocket_control_frames_never_drop_the_socket(fuzz_app):
    app, _client, session, _key = fuzz_app
    sock = websocket.create_connection(
        f"{app.ws_url}{API}/ws/{session['session_id']}?token={session['token']}&mode=push_to_talk", timeout=20
    )
    frames = st.one_of(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["ping", "end", "interrupt", "nope", "", "$ne"])},
            optional={k: json_values for k in ("turn_id", "played_chunks", "data")},
        ).map(json.dumps),
        bodies,
    )

    def own_reply() -> dict:
        while True:
            message = json.loads(sock.recv())
            if message.get("seq") is None:
                return message

    @FUZZ
    @given(frame=frames)
    def check(frame: str) -> None:
        if not frame:
            return  # an empty text frame is not a message
        sock.send(frame)
        reply = own_reply()
        assert reply["type"] in ("pong", "accepted", "interrupted", "error"), reply
        if reply["type"] == "error":
            assert reply["code"] and reply["message"]

    try:
        check()
        sock.send(json.dumps({"type": "ping"}))
        assert own_reply()["type"] == "pong"
    finally:
        sock.close()


# A long-lived decoder process: inputs in (length-prefixed), one JSON verdict per input out. If an input
# crashes it (the SIGSEGV of issue 16 row 1), the test sees the process die and names the input.
DECODER = r"""
import json, struct, sys
from voiceapp.audio import decode
from voiceapp.config import Settings
from voiceapp.errors import AudioError
settings = Settings.from_env({})
stdin, stdout = sys.stdin.buffer, sys.stdout
while True:
    head = stdin.read(4)
    if len(head) < 4:
        break
    data = stdin.read(struct.unpack("<I", head)[0])
    try:
        decoded = decode(data, settings)
        verdict = {"ok": True, "samples": int(len(decoded.samples))}
    except AudioError as err:
        verdict = {"ok": False, "code": err.code}
    except Exception as err:
        verdict = {"ok": False, "unexpected": repr(err)[:200]}
    stdout.write(json.dumps(verdict) + "\n")
    stdout.flush()
"""


@pytest.fixture(scope="module")
def decoder():
    proc = subprocess.Popen(
        [sys.executable, "-c", DECODER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    yield proc
    proc.stdin.close()
    proc.wait(timeout=30)


def _decode_remote(proc, data: bytes) -> dict:
    proc.stdin.write(struct.pack("<I", len(data)) + data)
    proc.stdin.flush()
    line = proc.stdout.readline()
    assert line, f"the decoder process died (exit {proc.wait(timeout=10)}) on {data[:64].hex()}"
    return json.loads(line)


def _seed_files() -> dict[str, bytes]:
    import numpy as np

    samples = (0.2 * np.sin(2 * np.pi * 220 * np.arange(8000) / 16000)).astype(np.float32)
    files = {fmt: audio_files.encode(samples, 16000, fmt) for fmt in ("wav", *audio_files.FORMATS)}
    files["wav-extensible-6"] = audio_files.wav_layout(6, mask=0x3F)[: 44 + 6 * 2 * 4000]
    files["flac-5.1"] = audio_files.encode_layout("flac", "5.1", seconds=0.3)
    return files


SEEDS = _seed_files()


def test_fuzz_audio_headers_never_crash_the_decoder(decoder):
    @settings(FUZZ, max_examples=500)
    @given(
        kind=st.sampled_from(sorted(SEEDS)),
        patches=st.lists(st.tuples(st.integers(0, 95), st.binary(min_size=1, max_size=4)), min_size=1, max_size=6),
    )
    def check(kind: str, patches: list[tuple[int, bytes]]) -> None:
        data = bytearray(SEEDS[kind])
        for offset, value in patches:  # the header lives in the first bytes of every container
            data[offset : offset + len(value)] = value
        verdict = _decode_remote(decoder, bytes(data))
        assert "unexpected" not in verdict, verdict  # only a clean decode or an AudioError (400/413)

    check()
    assert decoder.poll() is None
