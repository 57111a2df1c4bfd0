"""Typed questions (text turns): REST and WebSocket through the real stack, their checks and limits, the CLI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
import requests
import websocket

from devstack.turns import wait_turn
from tests.support import new_session

QUESTION = "What time do you open on Saturday?"


def _auth(session: dict) -> dict:
    return {"Authorization": f"Bearer {session['token']}"}


def _turns_url(base_url: str, session: dict) -> str:
    return f"{base_url}/api/v1/voice/sessions/{session['session_id']}/turns"


def _post_text(base_url: str, session: dict, body, **kwargs) -> requests.Response:
    """POST a JSON body (any value) to the session's turns."""
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    headers = {**_auth(session), "Content-Type": "application/json"}
    return requests.post(_turns_url(base_url, session), data=data, headers=headers, timeout=30, **kwargs)


def _connect(ws_url: str, session: dict, last_seq: int | None = None) -> websocket.WebSocket:
    resume = f"&last_seq={last_seq}" if last_seq is not None else ""
    url = f"{ws_url}/api/v1/voice/ws/{session['session_id']}?token={session['token']}{resume}"
    return websocket.create_connection(url, timeout=90)


def _events_until_done(ws, turn_id: str | None = None) -> list[dict]:
    events = []
    while True:
        message = json.loads(ws.recv())
        events.append(message)
        ended = message["type"] in ("done", "error") and message.get("seq") is not None
        if ended and (turn_id is None or message["turn_id"] == turn_id):
            return events


def _settled(events: list[dict], turn_id: str) -> list[dict]:
    return [e for e in events if e.get("seq") is not None and e["turn_id"] == turn_id]


def _turn_doc(live, turn_id: str) -> dict:
    return live.db[live.settings.interactions_collection].find_one({"_id": turn_id})


def test_typed_question_over_http_gets_the_events_the_answer_and_a_turn_record(live, demo_kb):
    session = new_session(live.base_url, "demo", language="en-US")
    # From seq 0: the handshake returns before the server subscribes, so a POST right after it can publish the
    # turn's first events before a live-only listener exists (the CI run of stop 24 lost status and transcript).
    ws = _connect(live.ws_url, session, last_seq=0)
    try:
        posted = _post_text(live.base_url, session, {"text": f"  {QUESTION}\n"})
        assert posted.status_code == 202, posted.text
        turn_id = posted.json()["turn_id"]
        events = _events_until_done(ws, turn_id)
    finally:
        ws.close()
    settled = _settled(events, turn_id)
    kinds = [e["type"] for e in settled]
    assert kinds[:3] == ["status", "transcript", "reply"] and kinds[-1] == "done", kinds
    assert set(kinds[3:-1]) == {"audio"}, kinds
    assert settled[0]["status"] == "thinking"
    assert settled[1]["final"] is True and settled[1]["text"] == QUESTION  # as typed, trimmed
    assert "8:00" in settled[2]["text"] and settled[2]["language"] == "en-US"
    assert settled[-1]["status"] == "done"
    turn = wait_turn(live.base_url, session, turn_id)
    assert turn["status"] == "done" and turn["transcript"] == QUESTION and turn["sources"]
    assert turn["source"] == "text"
    audio = requests.get(f"{live.base_url}{turn['audio_url']}", headers=_auth(session), timeout=30)
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
    doc = _turn_doc(live, turn_id)
    assert doc["source"] == "text" and doc["upload_id"] is None and doc["project"] == "demo"
    assert doc["transcript"] == QUESTION and doc["reply_text"] == turn["reply_text"]


@pytest.mark.parametrize("kind", ["text", "text_input"])
def test_typed_question_over_the_websocket_is_answered_like_speech(live, demo_kb, kind):
    session = new_session(live.base_url, "demo")
    ws = _connect(live.ws_url, session)
    try:
        ws.send(json.dumps({"type": kind, "text": "Do you deliver?"}))
        events = _events_until_done(ws)
        accepted = [e for e in events if e["type"] == "accepted"]
        assert len(accepted) == 1
        turn_id = accepted[0]["turn_id"]
        # The socket keeps serving: a bad text message gets an error, the next good one an answer.
        ws.send(json.dumps({"type": kind, "text": ""}))
        error = json.loads(ws.recv())
        assert error["type"] == "error" and error["seq"] is None and error["code"] == "invalid_text"
        ws.send(json.dumps({"type": kind, "text": "Thank you!"}))
        second = _events_until_done(ws)
    finally:
        ws.close()
    settled = _settled(events, turn_id)
    assert [e["type"] for e in settled][:3] == ["status", "transcript", "reply"]
    assert settled[1]["text"] == "Do you deliver?" and settled[1]["engine"] == "text"
    assert "deliver" in settled[2]["text"].lower(), settled[2]["text"]
    assert settled[-1]["type"] == "done" and settled[-1]["status"] == "done"
    assert any(e["type"] == "audio" and e.get("audio_url") for e in settled)
    assert second[-1]["type"] == "done" and second[-1]["status"] == "done"
    assert _turn_doc(live, turn_id)["source"] == "text"
    assert live.db[live.settings.interactions_collection].count_documents({"session_id": session["session_id"]}) == 2


BAD_BODIES = [
    ({"text": ""}, "invalid_text"),
    ({"text": " \n\t "}, "invalid_text"),
    ({}, "invalid_text"),
    ({"text": None}, "invalid_text"),
    ({"text": 42}, "invalid_text"),
    ({"text": ["What", "time"]}, "invalid_text"),
    ({"text": {"$gt": ""}}, "invalid_text"),
    ({"text": "open\x00ing hours"}, "invalid_text"),
    ({"text": "\x1b[2Jhours"}, "invalid_text"),
    ({"text": "open\u0085hours"}, "invalid_text"),  # a C1 control (NEL)
    ({"text": "x" * 501}, "text_too_long"),
    (["What time do you open?"], "invalid_json"),
    ('{"text": "unclosed', "invalid_json"),
    ("[" * 3000 + "]" * 3000, "invalid_json"),  # nesting that would exhaust the parser's recursion
    (b'{"text": "\xff\xfe"}', "invalid_json"),  # not UTF-8
]


def test_bad_text_gets_a_clear_400_records_nothing_and_the_next_question_is_accepted(front):
    app = front()
    session = new_session(app.base_url, "demo")
    interactions = app.db[app.settings.interactions_collection]
    for body, code in BAD_BODIES:
        response = _post_text(app.base_url, session, body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["code"] == code, (body, response.text)
        assert response.json()["error"]["message"]
    huge = _post_text(app.base_url, session, json.dumps({"text": "a" * (10 * 1024 * 1024)}).encode())
    assert huge.status_code == 400 and huge.json()["error"]["code"] == "text_too_long"
    assert "VOICE_TEXT_MAX_CHARS" in huge.json()["error"]["message"]
    assert interactions.count_documents({"session_id": session["session_id"]}) == 0
    longest = _post_text(app.base_url, session, {"text": "y" * 500})
    multi_line = _post_text(app.base_url, session, {"text": "Opening hours?\n\tOn Sunday"})
    assert longest.status_code == 202 and multi_line.status_code == 202, (longest.text, multi_line.text)
    doc = interactions.find_one({"_id": multi_line.json()["turn_id"]})
    assert doc["transcript"] == "Opening hours?\n\tOn Sunday" and doc["status"] == "recognized"
    assert requests.get(f"{app.base_url}/healthz", timeout=5).status_code == 200


class _Trickle(io.RawIOBase):
    """A request body that arrives a few bytes per read, as a slow or chunked upload does."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        piece, self.data = self.data[:5], self.data[5:]
        buffer[: len(piece)] = piece
        return len(piece)


def test_a_body_that_arrives_in_small_reads_is_read_whole():
    from voiceapp.config import Settings
    from voiceapp.errors import BadRequest
    from voiceapp.web.textinput import read_text_body

    settings = Settings.from_env({}, text_max_chars=40)
    assert read_text_body(_Trickle(json.dumps({"text": QUESTION}).encode()), settings) == QUESTION
    with pytest.raises(BadRequest) as refused:
        read_text_body(_Trickle(json.dumps({"text": "y" * 5000}).encode()), settings)
    assert refused.value.code == "text_too_long"


def test_text_check_trims_and_names_what_is_wrong():
    from voiceapp.config import Settings
    from voiceapp.errors import BadRequest
    from voiceapp.web.textinput import check_text

    settings = Settings.from_env({}, text_max_chars=12)
    assert check_text("  Hours?\n", settings) == "Hours?"
    assert check_text("Часы работы?", settings) == "Часы работы?"
    for value, code, words in [
        ("", "invalid_text", "empty"),
        (7, "invalid_text", "string"),
        ("a\x07b", "invalid_text", "U+0007"),
        ("a\ud800b", "invalid_text", "U+D800"),  # a lone surrogate (JSON can carry one)
        ("x" * 13, "text_too_long", "12 characters"),
    ]:
        with pytest.raises(BadRequest) as refused:
            check_text(value, settings)
        assert refused.value.code == code and words in refused.value.message and refused.value.status == 400


def test_text_length_cap_is_a_setting(front):
    app = front(text_max_chars=10)
    session = new_session(app.base_url, "demo")
    assert session["text_max_chars"] == 10  # clients (the widget's text box) learn the cap with the session
    assert _post_text(app.base_url, session, {"text": "Open now?"}).status_code == 202
    refused = _post_text(app.base_url, session, {"text": "Are you open now?"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "text_too_long"
    assert "10 characters" in refused.json()["error"]["message"]


def test_text_turns_need_the_session_token_and_a_live_session(front):
    app = front()
    session, other = new_session(app.base_url, "demo"), new_session(app.base_url, "demo")
    url = _turns_url(app.base_url, session)
    missing = requests.post(url, json={"text": QUESTION}, timeout=10)
    assert missing.status_code == 401
    foreign = requests.post(url, json={"text": QUESTION}, headers=_auth(other), timeout=10)
    assert foreign.status_code == 403
    assert requests.delete(url.rsplit("/", 1)[0], headers=_auth(session), timeout=10).status_code == 204
    ended = _post_text(app.base_url, session, {"text": QUESTION})
    assert ended.status_code == 410 and ended.json()["error"]["code"] == "voice_session_expired"


def test_text_turns_obey_the_rate_limit_over_http_and_the_websocket(front):
    app = front(rate_limit_ip="2/minute")
    session = new_session(app.base_url, "demo")
    codes = [_post_text(app.base_url, session, {"text": QUESTION}).status_code for _ in range(3)]
    assert codes == [202, 202, 429], codes
    ws = _connect(app.ws_url, session)
    try:
        replies = []
        for _ in range(3):
            ws.send(json.dumps({"type": "text", "text": QUESTION}))
            while (message := json.loads(ws.recv())).get("seq") is not None:
                continue  # the turn's own events
            replies.append(message)
    finally:
        ws.close()
    assert [r["type"] for r in replies] == ["accepted", "accepted", "error"], replies
    assert replies[2]["code"] == "rate_limited"
    total = app.db[app.settings.interactions_collection].count_documents({"session_id": session["session_id"]})
    assert total == 4


def test_text_turns_are_refused_while_the_queues_are_full(front):
    app = front(queue_max_depth=1)  # no worker drains this front's queues
    session = new_session(app.base_url, "demo")
    codes = [_post_text(app.base_url, session, {"text": QUESTION}).status_code for _ in range(3)]
    assert codes == [202, 202, 503], codes
    busy = _post_text(app.base_url, session, {"text": QUESTION})
    assert busy.json()["error"]["code"] == "busy" and busy.headers["Retry-After"]


def _cli(live, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **live.settings.to_env(), "VOICEAPP_HOME": live.settings.home}
    return subprocess.run(
        [sys.executable, "-m", "voiceapp.cli", "ask", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_asks_a_typed_question(live, demo_kb, tmp_path):
    out = tmp_path / "reply.wav"
    done = _cli(live, "--project", "demo", "--text", QUESTION, "--json", "--out", str(out))
    assert done.returncode == 0, done.stderr
    turn = json.loads(done.stdout)
    assert turn["transcript"] == QUESTION and "8:00" in turn["reply_text"]
    assert out.read_bytes()[:4] == b"RIFF"
    assert _turn_doc(live, turn["turn_id"])["source"] == "text"
    neither = _cli(live, "--project", "demo")
    assert neither.returncode == 2 and "AUDIO_FILE or --text" in neither.stderr
    empty = _cli(live, "--project", "demo", "--text", "   ")
    assert empty.returncode == 1 and "invalid_text" in empty.stderr


def test_openapi_documents_the_json_text_body_with_the_default_cap(live):
    from voiceapp.config import Settings

    document = requests.get(f"{live.base_url}/api/v1/voice/openapi.json", timeout=5).json()
    content = document["paths"]["/api/v1/voice/sessions/{session_id}/turns"]["post"]["requestBody"]["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/TextTurnRequest"}
    schema = document["components"]["schemas"]["TextTurnRequest"]
    assert schema["required"] == ["text"]
    assert schema["properties"]["text"]["maxLength"] == Settings.from_env({}).text_max_chars


def test_a_russian_typed_question_is_answered_from_the_russian_knowledge_base_in_russian(live):
    from voiceapp.demo import KB_RU_DIR
    from voiceapp.dialog.knowledge import load_directory
    from voiceapp.storage.projects import create_key

    key = create_key(live.db, live.settings, "demo-ru-text")
    load_directory(live.db, live.settings, "demo-ru-text", KB_RU_DIR)
    session = new_session(live.base_url, "demo-ru-text", key=key, language="ru")
    ws = _connect(live.ws_url, session)
    try:
        ws.send(json.dumps({"type": "text", "text": "Во сколько вы открываетесь в субботу?"}))
        events = _events_until_done(ws)
    finally:
        ws.close()
    reply = next(e for e in events if e["type"] == "reply")
    assert reply["language"] == "ru"
    assert "девять утра" in reply["text"], reply["text"]
    transcript = next(e for e in events if e["type"] == "transcript")
    assert transcript["text"] == "Во сколько вы открываетесь в субботу?"
