"""Issue 16, the front door: quotas per project, rate limits on verified identities, live-utterance limits,
ended sessions, body caps, Host-independent URLs, proxy hops, knowledge regexes and the CLI's settings errors.

Each test replays one attack of the issue against real Redis and MongoDB-wire (the `front` fixture: an API
on its own Redis database) or the whole live stack with its workers, and checks that another visitor is
not affected.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import requests
import websocket

from tests.support import REPO, new_session, shared_file
from voiceapp.audio import decode
from voiceapp.storage.projects import create_key
from voiceapp.utterances import PREFIX as UTT_PREFIX

API = "/api/v1/voice"


def _create(front, project="demo", key=None, headers=None, **body):
    headers = {**(headers or {}), **({"Authorization": f"Bearer {key}"} if key else {})}
    return requests.post(
        f"{front.base_url}{API}/sessions", json={"project": project, **body}, headers=headers, timeout=10
    )


def _auth(session: dict) -> dict:
    return {"Authorization": f"Bearer {session['token']}"}


def _ws(base, session, **query):
    query = "".join(f"&{k}={v}" for k, v in query.items())
    url = f"{base.ws_url}{API}/ws/{session['session_id']}?token={session['token']}{query}"
    return websocket.create_connection(url, timeout=15)


def _first_own_message(sock) -> dict:
    """The first message that is not a numbered session event."""
    while True:
        message = json.loads(sock.recv())
        if message.get("seq") is None:
            return message


def _admitted(sock):
    """The socket once the server has admitted it (its slot is taken when the first pong comes back)."""
    assert _pong(sock)
    return sock


def _pong(sock) -> bool:
    sock.send(json.dumps({"type": "ping"}))
    return _first_own_message(sock)["type"] == "pong"


# ---------------------------------------------------------------- rows 4, 5, 6: per-project quotas


def test_an_open_project_cannot_take_the_session_slots_of_other_projects(front):
    """Row 4: keyless sessions of an open project stop at its own quota; a keyed project still gets in."""
    app = front(max_concurrent_sessions=10, open_project_max_sessions=3, open_projects=("demo",))
    key = create_key(app.db, app.settings, "beta")
    codes = [_create(app).status_code for _ in range(5)]
    assert codes == [201, 201, 201, 429, 429]
    refused = _create(app).json()["error"]
    assert refused["code"] == "project_session_quota" and "demo" in refused["message"]
    assert _create(app, "beta", key).status_code == 201


def test_project_session_quota_is_shared_by_api_processes_and_freed_on_end(front):
    a = front(max_concurrent_sessions=10, open_project_max_sessions=2, open_projects=("demo",))
    b = front(max_concurrent_sessions=10, open_project_max_sessions=2, open_projects=("demo",))
    first = _create(a).json()
    assert _create(b).status_code == 201
    assert _create(a).json()["error"]["code"] == "project_session_quota"
    url = f"{a.base_url}{API}/sessions/{first['session_id']}"
    assert requests.delete(url, headers=_auth(first), timeout=5).status_code == 204
    assert _create(b).status_code == 201


def test_keyed_projects_have_their_own_session_quota_within_the_global_limit(front):
    app = front(max_concurrent_sessions=3, project_max_sessions=2, open_projects=())
    beta, gamma = create_key(app.db, app.settings, "beta"), create_key(app.db, app.settings, "gamma")
    assert [_create(app, "beta", beta).status_code for _ in range(3)] == [201, 201, 429]
    assert _create(app, "gamma", gamma).status_code == 201
    # the global cap still holds over every project
    assert _create(app, "gamma", gamma).json()["error"]["code"] == "voice_concurrency_limit"


def test_one_session_token_cannot_hold_every_websocket(front):
    """Row 5: sockets on one token stop at VOICE_SESSION_MAX_WEBSOCKETS; another project's token still connects."""
    app = front(session_max_websockets=2, ws_max_connections=50, open_projects=("demo",))
    key = create_key(app.db, app.settings, "beta")
    abuser = _create(app).json()
    held = [_admitted(_ws(app, abuser)), _admitted(_ws(app, abuser))]
    third = _ws(app, abuser)
    try:
        refusal = _first_own_message(third)
        assert refusal["type"] == "error" and refusal["code"] == "too_many_connections"
        assert "VOICE_SESSION_MAX_WEBSOCKETS" in refusal["message"]
        other = _ws(app, _create(app, "beta", key).json())
        try:
            assert _pong(other)
        finally:
            other.close()
        assert all(_pong(sock) for sock in held)
    finally:
        third.close()
        for sock in held:
            sock.close()


def test_websocket_quota_of_an_open_project_counts_across_api_processes(front):
    settings = dict(session_max_websockets=5, open_project_max_websockets=2, open_projects=("demo",))
    a, b = front(**settings), front(**settings)
    key = create_key(b.db, b.settings, "beta")
    first, second = _admitted(_ws(a, _create(a).json())), _admitted(_ws(b, _create(b).json()))
    third = _ws(a, _create(a).json())
    try:
        assert _first_own_message(third)["code"] == "too_many_connections"
        keyed = _ws(b, _create(b, "beta", key).json())
        try:
            assert _pong(keyed)
        finally:
            keyed.close()
    finally:
        third.close()
    first.close()
    deadline = time.monotonic() + 10  # the closed socket's slot is released by its serving thread
    while time.monotonic() < deadline:
        retry = _ws(a, _create(a).json())
        message = None
        try:
            retry.send(json.dumps({"type": "ping"}))
            message = _first_own_message(retry)
        finally:
            retry.close()
        if message["type"] == "pong":
            break
        time.sleep(0.2)
    assert message["type"] == "pong"
    second.close()


def test_rate_limit_is_keyed_on_the_verified_project_not_the_body(front):
    """Row 6: keyless requests naming a keyed project never use up that project's budget."""
    app = front(rate_limit_ip="1000/minute", rate_limit_project="3/minute", open_projects=())
    key = create_key(app.db, app.settings, "beta")
    for _ in range(6):
        assert _create(app, "beta").status_code == 401  # no key: refused, and not counted against beta
    codes = [_create(app, "beta", key).status_code for _ in range(4)]
    assert codes == [201, 201, 201, 429]  # beta's own budget, whole
    assert _create(app, "beta", key).json()["error"]["code"] == "rate_limited"


def test_open_project_rate_limit_leaves_keyed_projects_alone(front):
    app = front(rate_limit_ip="1000/minute", rate_limit_open_project="2/minute", open_projects=("demo",))
    key = create_key(app.db, app.settings, "beta")
    assert [_create(app).status_code for _ in range(3)] == [201, 201, 429]
    assert _create(app, "beta", key).status_code == 201


def test_reads_and_refreshes_of_one_session_are_rate_limited(front):
    app = front(rate_limit_session="4/minute")
    abuser, other = _create(app).json(), _create(app).json()
    base = f"{app.base_url}{API}/sessions/{abuser['session_id']}"
    calls = [
        requests.post(f"{base}/token", headers=_auth(abuser), timeout=5),
        requests.get(base, headers=_auth(abuser), timeout=5),
        requests.get(f"{base}/history", headers=_auth(abuser), timeout=5),
        requests.get(f"{base}/turns/{'0' * 32}", headers=_auth(abuser), timeout=5),
        requests.get(f"{base}/audio/{'0' * 24}", headers=_auth(abuser), timeout=5),
    ]
    assert [c.status_code for c in calls[:4]] == [200, 200, 200, 404]
    assert calls[4].status_code == 429 and calls[4].json()["error"]["code"] == "rate_limited"
    fine = requests.get(f"{app.base_url}{API}/sessions/{other['session_id']}", headers=_auth(other), timeout=5)
    assert fine.status_code == 200


# ---------------------------------------------------------------- row 2: live utterances end by the clock


def _utterance_state(front, turn_id: str) -> dict:
    client = front.redis
    entries = client.xrange(f"{UTT_PREFIX}:{turn_id}:audio")
    return {
        "closed": bool(client.exists(f"{UTT_PREFIX}:{turn_id}:closed")),
        "end": any(b"end" in fields for _, fields in entries),
        "abort": any(b"abort" in fields for _, fields in entries),
        "ttl": client.ttl(f"{UTT_PREFIX}:{turn_id}:audio"),
    }


def _frame(voiced: bool, ms: int = 20) -> bytes:
    n = 16 * ms
    if not voiced:
        return bytes(2 * n)
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / 16000)
    return (tone * 32767).astype("<i2").tobytes()


def _timeout_error(sock, feed=None, limit_s: float = 30.0) -> dict:
    """Feed frames (optional) until the server reports the utterance ended by a limit."""
    sock.settimeout(0.5)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if feed is not None:
            feed()
        try:
            message = json.loads(sock.recv())
        except websocket.WebSocketTimeoutException:
            continue
        if message.get("code") == "utterance_timeout":
            return message
    raise AssertionError("the utterance was never ended")


def test_push_to_talk_utterance_ends_when_frames_stop(front):
    app = front(frame_gap_timeout=1.0)
    session = _create(app).json()
    sock = _ws(app, session, mode="push_to_talk")
    try:
        sock.send_binary(_frame(True))
        ended = _timeout_error(sock)
        assert "AUDIO_FRAME_GAP_TIMEOUT" in ended["message"]
        state = _utterance_state(app, ended["turn_id"])
        assert state["end"] and not state["abort"]  # speech was heard: it is recognised, not dropped
        assert _pong(sock)
    finally:
        sock.close()


def test_push_to_talk_trickle_of_silence_is_dropped_after_the_listen_timeout(front):
    """Row 2: 20 ms of silence every half second, in push-to-talk: ended after AUDIO_LISTEN_TIMEOUT of silence."""
    app = front(frame_gap_timeout=2.0, listen_timeout=2.0)
    session = _create(app).json()
    sock = _ws(app, session, mode="push_to_talk")
    last = [0.0]

    def trickle():
        if time.monotonic() - last[0] > 0.5:
            sock.send_binary(_frame(False))
            last[0] = time.monotonic()

    try:
        ended = _timeout_error(sock, trickle)
        assert "AUDIO_LISTEN_TIMEOUT" in ended["message"]
        state = _utterance_state(app, ended["turn_id"])
        assert state["abort"] and state["closed"]  # only silence: discarded, no recognition needed
        assert 0 < state["ttl"] <= 60  # and its audio leaves Redis soon
    finally:
        sock.close()


def test_live_utterance_has_a_hard_wall_clock_limit(front):
    app = front(frame_gap_timeout=1.0, audio_max_duration=2.0, listen_timeout=30.0)
    session = _create(app).json()
    sock = _ws(app, session, mode="push_to_talk")
    last = [0.0]

    def trickle_voice():
        if time.monotonic() - last[0] > 0.5:
            sock.send_binary(_frame(True, ms=10))  # voiced, far slower than real time: never reaches 2 s of audio
            last[0] = time.monotonic()

    try:
        ended = _timeout_error(sock, trickle_voice)
        assert "AUDIO_MAX_DURATION" in ended["message"]
        assert _utterance_state(app, ended["turn_id"])["end"]
    finally:
        sock.close()


def test_idle_push_to_talk_sockets_no_longer_starve_another_visitors_turn(live, demo_kb):
    """Row 2 end to end: 4 push-to-talk sockets trickling silence (as many as the STT worker's threads) while
    another visitor's uploaded turn must complete. Before, the trickles held every recognition thread until
    AUDIO_MAX_DURATION (60 s; the issue saw 45 s): now the front ends each after AUDIO_LISTEN_TIMEOUT (8 s)."""
    trickling, stop, ended = [], threading.Event(), {}
    for _ in range(live.settings.worker_concurrency):
        session = new_session(live.base_url, "demo")
        trickling.append(_ws(live, session, mode="push_to_talk"))

    def trickle():
        while not stop.is_set():
            for index, sock in enumerate(trickling):
                try:
                    sock.send_binary(_frame(False))
                    sock.settimeout(0.05)
                    while True:  # drain what arrived (session events too) until the socket is quiet
                        message = json.loads(sock.recv())
                        if message.get("code") == "utterance_timeout":
                            ended.setdefault(index, message["message"])
                except (OSError, ValueError, websocket.WebSocketException):
                    pass
            stop.wait(2.0)  # a frame every 2 s: under the 3 s frame gap, so only the silence limit can end them

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)  # every trickling utterance is now holding a recognition task
        visitor = new_session(live.base_url, "demo")
        audio = decode(shared_file("jfk.flac").read_bytes(), live.settings)
        from tests.fakes import audio_files

        body = audio_files.encode(audio.samples[: 3 * 16000], 16000, "flac")
        posted = requests.post(
            f"{live.base_url}{API}/sessions/{visitor['session_id']}/turns",
            data=body,
            headers=_auth(visitor),
            timeout=30,
        )
        assert posted.status_code == 202, posted.text
        url = f"{live.base_url}{API}/sessions/{visitor['session_id']}/turns/{posted.json()['turn_id']}"
        # Not a speed assert: a bound well under AUDIO_MAX_DURATION, the only thing that freed the threads before.
        deadline = time.monotonic() + live.settings.audio_max_duration - 15
        status = None
        while time.monotonic() < deadline and status not in ("done", "error"):
            wait = max(1, min(10, deadline - time.monotonic()))
            status = requests.get(url, params={"wait": wait}, headers=_auth(visitor), timeout=30).json()["status"]
        assert status == "done"
        assert thread.is_alive()  # the sockets were still trickling the whole time
        settle = time.monotonic() + 10  # the trickle thread reads each socket every 2 s
        while len(ended) < len(trickling) and time.monotonic() < settle:
            time.sleep(0.2)
        assert sorted(ended) == list(range(len(trickling))), ended  # each trickle was cut by the silence limit
        assert all("AUDIO_LISTEN_TIMEOUT" in why for why in ended.values()), ended
    finally:
        stop.set()
        thread.join(timeout=10)
        for sock in trickling:
            sock.close()


# ---------------------------------------------------------------- row 9: utterance rate on a WebSocket


def test_new_utterances_on_a_websocket_are_rate_limited_per_session(front):
    app = front(rate_limit_utterances="2/minute")
    session, other = _create(app).json(), _create(app).json()
    sock = _ws(app, session, mode="push_to_talk")
    try:
        for _ in range(2):
            sock.send_binary(_frame(True))
            sock.send(json.dumps({"type": "end"}))
            assert _first_own_message(sock)["type"] == "accepted"
        sock.send_binary(_frame(True))
        refused = _first_own_message(sock)
        assert refused["type"] == "error" and refused["code"] == "rate_limited"
        assert _pong(sock)  # the socket stays
    finally:
        sock.close()
    own = _ws(app, other, mode="push_to_talk")
    try:
        own.send_binary(_frame(True))
        own.send(json.dumps({"type": "end"}))
        assert _first_own_message(own)["type"] == "accepted"
    finally:
        own.close()


# ---------------------------------------------------------------- row 7: an ended session's token


def test_deleted_session_token_no_longer_reads_turns_or_audio(live, demo_kb):
    session = new_session(live.base_url, "demo")
    audio = decode(shared_file("jfk.flac").read_bytes(), live.settings)
    from tests.fakes import audio_files

    body = audio_files.encode(audio.samples[: 3 * 16000], 16000, "flac")
    base = f"{live.base_url}{API}/sessions/{session['session_id']}"
    turn_id = requests.post(f"{base}/turns", data=body, headers=_auth(session), timeout=30).json()["turn_id"]
    deadline, turn = time.monotonic() + 120, {}
    while time.monotonic() < deadline and turn.get("status") not in ("done", "error"):
        turn = requests.get(f"{base}/turns/{turn_id}", params={"wait": 10}, headers=_auth(session), timeout=30).json()
    assert turn["status"] == "done" and turn["audio_url"]
    audio_url = f"{live.base_url}{turn['audio_url']}"
    assert requests.get(audio_url, headers=_auth(session), timeout=10).status_code == 200
    assert requests.delete(base, headers=_auth(session), timeout=10).status_code == 204
    for response in (
        requests.get(f"{base}/turns/{turn_id}", headers=_auth(session), timeout=10),
        requests.get(audio_url, headers=_auth(session), timeout=10),
        requests.get(audio_url, params={"token": session["token"]}, timeout=10),
        requests.get(f"{base}/history", headers=_auth(session), timeout=10),
    ):
        assert response.status_code == 410, response.text
        assert response.json()["error"]["code"] == "voice_session_expired"


# ---------------------------------------------------------------- rows 8, 10 and the risks: bodies, JSON, URLs


def test_chunked_knowledge_upload_over_the_limit_is_refused_while_reading(front):
    """Row 8: no Content-Length, 1.5 MB sent chunked against a 1 MiB limit: 413, nothing stored."""
    app = front(kb_max_bytes=1024 * 1024)
    key = create_key(app.db, app.settings, "kbproj")
    text = "word " * (300 * 1024)  # 1.5 MB
    payload = json.dumps({"documents": [{"source": "big", "text": text}]}).encode()

    def chunks():
        for start in range(0, len(payload), 64 * 1024):
            yield payload[start : start + 64 * 1024]

    response = requests.post(
        f"{app.base_url}{API}/projects/kbproj/knowledge",
        data=chunks(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"
    assert app.db[app.settings.knowledge_collection].count_documents({"project": "kbproj"}) == 0
    small = {"documents": [{"source": "small", "text": "Opening hours are nine to five."}]}
    ok = requests.post(
        f"{app.base_url}{API}/projects/kbproj/knowledge",
        json=small,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert ok.status_code == 201


def test_json_bodies_are_capped_before_parsing_and_before_auth(front):
    app = front(json_max_bytes=4096)
    big = json.dumps({"project": "demo", "pad": "x" * 10000})
    response = requests.post(
        f"{app.base_url}{API}/sessions", data=big, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
    # the same without Content-Length (chunked): refused while reading, not after buffering it all
    chunked = requests.post(
        f"{app.base_url}{API}/sessions",
        data=(big[i : i + 1000].encode() for i in range(0, len(big), 1000)),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert chunked.status_code == 413
    assert _create(app).status_code == 201


def test_deeply_nested_json_is_a_clear_400(front):
    app = front(json_max_bytes=256 * 1024)
    for body in ("[" * 100000, '{"project":' * 20000):
        response = requests.post(
            f"{app.base_url}{API}/sessions", data=body, headers={"Content-Type": "application/json"}, timeout=10
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "invalid_json"
    session = _create(app).json()
    sock = _ws(app, session)
    try:
        sock.send("[" * 60000)
        error = _first_own_message(sock)
        assert error["type"] == "error" and error["code"] == "bad_frame"
        assert _pong(sock)
    finally:
        sock.close()


def test_websocket_url_comes_from_settings_not_the_host_header(front):
    app = front(api_host="127.0.0.1", api_port=18123)
    session = _create(app, headers={"Host": "evil.example:666"}).json()
    assert session["websocket_url"].startswith("ws://127.0.0.1:18123/api/v1/voice/ws/")
    public = front(public_url="https://voice.example.com")
    session = _create(public, headers={"Host": "evil.example"}).json()
    assert session["websocket_url"].startswith("wss://voice.example.com/api/v1/voice/ws/")


def test_forwarded_for_is_trusted_only_with_proxy_hops(front):
    behind_proxy = front(proxy_hops=1, rate_limit_ip="2/minute")
    codes = [_create(behind_proxy, headers={"X-Forwarded-For": "203.0.113.7"}).status_code for _ in range(3)]
    assert codes == [201, 201, 429]
    assert _create(behind_proxy, headers={"X-Forwarded-For": "203.0.113.8"}).status_code == 201  # its own bucket
    direct = front(proxy_hops=0, rate_limit_ip="2/minute")
    spoofed = [
        _create(direct, headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code for i in range(3)
    ]  # without trusted hops the header is ignored: one client, one bucket
    assert spoofed == [201, 201, 429]


# ---------------------------------------------------------------- row 3: knowledge regexes


@pytest.mark.timeout(120)  # the former patterns needed hours for these (cubic / quadratic); a guard, not a timing
def test_knowledge_cleaning_handles_pathological_lines():
    from voiceapp.dialog.knowledge import _chunks, _clean_markdown

    for text in (" " * 100000 + "x", "[" * 200000, "![" * 100000, "<" * 200000, "[a](" * 50000, "\t" * 100000 + "|"):
        _chunks(_clean_markdown(text))
    cleaned = _clean_markdown("| a | b |\n|---|:--:|\n- item\n[link](http://x) ![img](y.png) <b>bold</b>\n---\nend")
    assert cleaned.split("\n") == [",  a ,  b , ", "", "item", "link  bold", "", "end"]


# ---------------------------------------------------------------- CLI: settings errors on one line


def test_cli_prints_a_bad_setting_on_one_line_without_a_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE", "API_", "MONGO", "REDIS"))}
    for command in (["status"], ["down"], ["migrate"], ["kb", "add", "--project", "x", str(REPO / "README.md")]):
        done = subprocess.run(
            [sys.executable, "-m", "voiceapp.cli", *command],
            env={**env, "API_PORT": "not-a-port", "VOICEAPP_HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, done
        assert "Traceback" not in done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert lines == [f"Error: API_PORT='not-a-port' is invalid: {lines[0].split('is invalid: ', 1)[1]}"], lines


def test_ws_connection_leases_expire_when_a_process_dies(front):
    """A WebSocket slot held by a process that vanished is reclaimed by its lease, not held forever."""
    from voiceapp.web.admission import WS_LEASE_S, WebSocketSlots

    app = front(session_max_websockets=1)
    slots = WebSocketSlots(app.redis, app.settings)
    slots.acquire("dead-socket", "a" * 32, "demo")
    with pytest.raises(Exception) as refused:
        slots.acquire("new-socket", "a" * 32, "demo")
    assert getattr(refused.value, "code", "") == "too_many_connections"
    # a dead process no longer renews: move its lease into the past, as WS_LEASE_S seconds would
    for key in (f"voiceapp:ws:session:{'a' * 32}", "voiceapp:ws:project:demo"):
        app.redis.zadd(key, {"dead-socket": time.time() - 1})
    slots.acquire("new-socket", "a" * 32, "demo")
    assert app.redis.ttl("voiceapp:ws:project:demo") <= 2 * WS_LEASE_S  # an idle key disappears too


def test_without_an_allow_list_only_the_apis_own_origin_is_allowed(front):
    """Safe default for origins: no list means this site only; any origin needs an explicit '*'."""
    app = front(allowed_origins=())
    own = app.base_url  # the widget page served by the API itself
    assert _create(app, headers={"Origin": "https://evil.example"}).json()["error"]["code"] == "origin_not_allowed"
    allowed = _create(app, headers={"Origin": own})
    assert allowed.status_code == 201 and allowed.headers["Access-Control-Allow-Origin"] == own
    session = allowed.json()
    url = f"{app.ws_url}{API}/ws/{session['session_id']}?token={session['token']}"
    evil = websocket.create_connection(url, timeout=10, origin="https://evil.example")
    try:
        assert _first_own_message(evil)["code"] == "origin_not_allowed"
    finally:
        evil.close()
    assert _create(app, headers={}).status_code == 201  # not a browser: keys and tokens still apply
    anyone = front(allowed_origins=("*",))
    assert _create(anyone, headers={"Origin": "https://elsewhere.example"}).status_code == 201


def test_container_access_log_never_holds_tokens(live, tmp_path):
    """The image's API (deploy/entrypoint.sh api, real gunicorn) logs paths without their query string."""
    import devstack as stack

    port = stack.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE", "API_", "MONGO", "REDIS"))}
    env.update(live.settings.to_env(), API_HOST="127.0.0.1", API_PORT=str(port), PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    env["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{env.get('PATH', '')}"
    log = tmp_path / "access.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(REPO / "deploy" / "entrypoint.sh"), "api"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.3)
        secret = "tok-SECRET-0123456789"
        requests.get(f"http://127.0.0.1:{port}/healthz?token={secret}", timeout=5)
        requests.get(f"http://127.0.0.1:{port}{API}/sessions/{'a' * 32}/audio/{'0' * 24}?token={secret}", timeout=5)
        deadline = time.monotonic() + 10
        while "/audio/" not in log.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text(errors="replace")
    assert f"GET {API}/sessions/{'a' * 32}/audio/{'0' * 24} HTTP/1.1" in text, text[-2000:]
    assert secret not in text


def test_a_project_can_have_its_own_quota(front, tmp_path):
    """`voiceapp project quota` gives one project a larger (or smaller) share than VOICE_PROJECT_MAX_*."""
    from voiceapp.storage.projects import set_quota

    app = front(
        project_max_sessions=1,
        project_max_websockets=1,
        max_concurrent_sessions=10,
        open_projects=(),
        session_max_websockets=5,
    )
    big, small = create_key(app.db, app.settings, "big"), create_key(app.db, app.settings, "small")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE", "MONGO", "REDIS", "API_"))}
    env.update(app.settings.to_env(), VOICEAPP_HOME=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "voiceapp.cli", "project", "quota", "--project", "big", "--max-sessions", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "'sessions': 3" in done.stdout
    assert [_create(app, "big", big).status_code for _ in range(4)] == [201, 201, 201, 429]
    first = _create(app, "small", small)
    assert first.status_code == 201 and _create(app, "small", small).status_code == 429  # the default: 1
    set_quota(app.db, app.settings, "small", None, 2)
    session = first.json()
    held = [_admitted(_ws(app, session)), _admitted(_ws(app, session))]  # its own WebSocket quota: 2
    third = _ws(app, session)
    try:
        assert _first_own_message(third)["code"] == "too_many_connections"
    finally:
        third.close()
        for sock in held:
            sock.close()
