"""The front: session limits, project keys, token scoping, origins, rate limits, WebSocket limits, health."""

import base64
import json
import os
import socket
import subprocess
import sys
import time

import requests
import websocket

from devstack.turns import ask
from tests.support import new_session, shared_file
from voiceapp.storage.projects import create_key
from voiceapp.web import ws as ws_module


def _post_session(front, project="demo", key=None, origin=None):
    headers = {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if origin:
        headers["Origin"] = origin
    return requests.post(
        f"{front.base_url}/api/v1/voice/sessions", json={"project": project}, headers=headers, timeout=10
    )


def _auth(session):
    return {"Authorization": f"Bearer {session['token']}"}


def test_concurrent_session_limit_holds_across_api_processes(front):
    a = front(max_concurrent_sessions=2)
    b = front(max_concurrent_sessions=2)
    first = _post_session(a)
    assert first.status_code == 201
    assert _post_session(b).status_code == 201
    refused = _post_session(a)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "voice_concurrency_limit"
    assert "concurrent" in refused.json()["error"]["message"]
    session = first.json()
    url = f"{a.base_url}/api/v1/voice/sessions/{session['session_id']}"
    assert requests.delete(url, headers=_auth(session), timeout=5).status_code == 204
    assert _post_session(b).status_code == 201


def test_expired_session_is_refused_and_activity_slides_expiry(front):
    app = front(session_timeout=2)
    # Stand in for a TTL monitor that has not run yet (real MongoDB deletes up to ~60 s late).
    sessions = app.db[app.settings.sessions_collection]
    ttl = [i["name"] for i in sessions.list_indexes() if "expireAfterSeconds" in i]
    assert ttl, "the migration created the TTL index"
    sessions.drop_index(ttl[0])
    idle = _post_session(app).json()
    active = _post_session(app).json()
    time.sleep(1.2)
    refresh = requests.post(
        f"{app.base_url}/api/v1/voice/sessions/{active['session_id']}/token", headers=_auth(active), timeout=5
    )
    assert refresh.status_code == 200 and refresh.json()["token"]
    time.sleep(1.2)
    expired = requests.get(f"{app.base_url}/api/v1/voice/sessions/{idle['session_id']}", headers=_auth(idle), timeout=5)
    assert expired.status_code == 410
    assert expired.json()["error"]["code"] == "voice_session_expired"
    assert sessions.count_documents({"session_id": idle["session_id"]}) == 1  # still stored, yet refused
    alive = requests.get(
        f"{app.base_url}/api/v1/voice/sessions/{active['session_id']}", headers=_auth(active), timeout=5
    )
    assert alive.status_code == 200


def test_project_key_from_the_cli_opens_sessions_and_is_stored_hashed(front):
    app = front(open_projects=())
    env = {**os.environ, **app.settings.to_env(), "VOICEAPP_HOME": app.settings.home}
    result = subprocess.run(
        [sys.executable, "-m", "voiceapp.cli", "project", "create", "--project", "shop"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("vk_") and len(key) > 30
    missing = _post_session(app, "shop")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "project_key_required"
    wrong = _post_session(app, "shop", key="vk_wrong")
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "invalid_project_key"
    other_key = create_key(app.db, app.settings, "other")
    assert _post_session(app, "shop", key=other_key).status_code == 403
    assert _post_session(app, "shop", key=key).status_code == 201
    stored = json.dumps(list(app.db[app.settings.projects_collection].find({}, {"_id": 0})), default=str)
    assert key not in stored and other_key not in stored


def test_a_token_never_opens_another_sessions_turns_audio_or_history(live, demo_kb):
    owner = new_session(live.base_url, "demo")
    stranger = new_session(live.base_url, "demo")
    base = f"{live.base_url}/api/v1/voice/sessions/{owner['session_id']}"
    turn = ask(live.base_url, owner, shared_file("jfk.flac").read_bytes())
    assert turn["status"] == "done"
    for url in (f"{base}/turns/{turn['turn_id']}", f"{live.base_url}{turn['audio_url']}", f"{base}/history", base):
        response = requests.get(url, headers=_auth(stranger), timeout=10)
        assert response.status_code == 403, url
        assert response.json()["error"]["code"] == "token_wrong_session"
    # the stranger's own session path cannot reach the owner's audio either
    audio_id = turn["audio_url"].rsplit("/", 1)[1]
    own_path = f"{live.base_url}/api/v1/voice/sessions/{stranger['session_id']}/audio/{audio_id}"
    assert requests.get(own_path, headers=_auth(stranger), timeout=10).status_code == 404
    history = requests.get(f"{base}/history", headers=_auth(owner), timeout=10).json()
    assert [t["turn_id"] for t in history["turns"]] == [turn["turn_id"]]


def test_origin_allow_list_applies_to_rest_and_websocket(front):
    app = front(open_projects=())
    key = create_key(app.db, app.settings, "shop", origins=("https://shop.example",))
    evil = _post_session(app, "shop", key=key, origin="https://evil.example")
    assert evil.status_code == 403 and evil.json()["error"]["code"] == "origin_not_allowed"
    good = _post_session(app, "shop", key=key, origin="https://shop.example")
    assert good.status_code == 201
    assert good.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    preflight = requests.options(
        f"{app.base_url}/api/v1/voice/sessions",
        headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
        timeout=5,
    )
    assert preflight.status_code == 204 and "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    session = good.json()
    url = f"{app.ws_url}/api/v1/voice/ws/{session['session_id']}?token={session['token']}"
    sock = websocket.create_connection(url, timeout=10, origin="https://evil.example")
    try:
        message = json.loads(sock.recv())
        assert message["code"] == "origin_not_allowed"
    finally:
        sock.close()
    sock = websocket.create_connection(url, timeout=10, origin="https://shop.example")
    try:
        sock.send(json.dumps({"type": "ping"}))
        assert json.loads(sock.recv())["type"] == "pong"
    finally:
        sock.close()


def test_rate_limits_per_ip_and_per_project(front):
    per_ip = front(rate_limit_ip="3/minute")
    codes = [_post_session(per_ip).status_code for _ in range(4)]
    assert codes == [201, 201, 201, 429]
    limited = _post_session(per_ip)
    assert limited.json()["error"]["code"] == "rate_limited"
    assert "Retry-After" in limited.headers or "X-RateLimit-Reset" in limited.headers
    # Open projects (no key) have their own, usually smaller, budget: VOICE_RATE_LIMIT_OPEN_PROJECT.
    per_project = front(rate_limit_ip="100/minute", rate_limit_open_project="2/minute", open_projects=("demo", "other"))
    assert [_post_session(per_project).status_code for _ in range(3)] == [201, 201, 429]
    assert _post_session(per_project, "other").status_code == 201  # another project has its own budget


def test_busy_queue_refuses_new_turns_with_retry_after(front):
    app = front(queue_max_depth=2)
    session = _post_session(app).json()
    app.redis.lpush("stt", *[b"{}"] * 5)
    refused = requests.post(
        f"{app.base_url}/api/v1/voice/sessions/{session['session_id']}/turns",
        data=shared_file("jfk.flac").read_bytes(),
        headers=_auth(session),
        timeout=30,
    )
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "busy"
    assert int(refused.headers["Retry-After"]) >= 1
    app.redis.delete("stt")
    accepted = requests.post(
        f"{app.base_url}/api/v1/voice/sessions/{session['session_id']}/turns",
        data=shared_file("jfk.flac").read_bytes(),
        headers=_auth(session),
        timeout=30,
    )
    assert accepted.status_code == 202


def _ws(front, session, **kw):
    return websocket.create_connection(
        f"{front.ws_url}/api/v1/voice/ws/{session['session_id']}?token={session['token']}", timeout=10, **kw
    )


def test_websocket_connection_cap_refuses_politely(front):
    app = front(ws_max_connections=2)
    session = _post_session(app).json()
    first, second = _ws(app, session), _ws(app, session)
    # The handshake returns before the server's handler counts the socket: wait for both to be counted.
    deadline = time.monotonic() + 10
    while ws_module.connections.count < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    third = _ws(app, session)
    try:
        refusal = json.loads(third.recv())
        assert refusal["type"] == "error" and refusal["code"] == "too_many_connections"
    finally:
        third.close()
    first.close()
    deadline = time.monotonic() + 10
    while ws_module.connections.count > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    fourth = _ws(app, session)
    try:
        fourth.send(json.dumps({"type": "ping"}))
        assert json.loads(fourth.recv())["type"] == "pong"
    finally:
        fourth.close()
        second.close()


def test_dead_peer_is_dropped_after_missed_pongs(front):
    app = front(ws_ping_interval=0.3)
    session = _post_session(app).json()
    baseline = ws_module.connections.count
    raw = socket.create_connection(("127.0.0.1", int(app.base_url.rsplit(":", 1)[1])))
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall(
        (
            f"GET /api/v1/voice/ws/{session['session_id']}?token={session['token']} HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    assert b"101" in raw.recv(1024).split(b"\r\n", 1)[0]
    deadline = time.monotonic() + 5
    while ws_module.connections.count <= baseline and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ws_module.connections.count == baseline + 1
    # never answer a ping: the server must give up on this peer by itself
    deadline = time.monotonic() + 15
    while ws_module.connections.count > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    raw.close()
    assert ws_module.connections.count == baseline


def test_oversized_frame_gets_an_error_and_the_socket_stays_usable(front):
    app = front(ws_max_frame_bytes=1000)
    session = _post_session(app).json()
    sock = _ws(app, session)
    try:
        sock.send_binary(b"\x00" * 2000)
        error = json.loads(sock.recv())
        assert error["code"] == "frame_too_large"
        sock.send(json.dumps({"type": "ping"}))
        assert json.loads(sock.recv())["type"] == "pong"
    finally:
        sock.close()


def test_rollback_switch_removes_voice_routes_and_keeps_data(live):
    from voiceapp import create_app

    db = live.db
    before = {name: db[name].count_documents({}) for name in db.list_collection_names()}
    client = create_app(live.settings.replace(voice_enabled=False)).test_client()
    assert client.post("/api/v1/voice/sessions", json={"project": "demo"}).status_code == 404
    assert client.get("/api/v1/voice/openapi.json").status_code == 404
    assert client.get("/widget/voice/dist/voice-widget.js").status_code == 404
    assert client.get("/healthz").status_code == 200
    after = {name: db[name].count_documents({}) for name in db.list_collection_names()}
    assert set(after) == set(before)


def test_openapi_document_is_valid_and_matches_the_routes(live):
    from openapi_spec_validator import validate

    from voiceapp import create_app

    document = requests.get(f"{live.base_url}/api/v1/voice/openapi.json", timeout=5).json()
    validate(document)
    app = create_app(live.settings)
    routes = {
        rule.rule.replace("<", "{").replace(">", "}")
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith(("/api/", "/healthz", "/readyz", "/metrics")) and "/ws/" not in rule.rule
    }
    documented = set(document["paths"])
    assert routes == documented


def test_readiness_counts_workers_per_queue(live, front):
    ready = requests.get(f"{live.base_url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["workers:stt"] == "ok"
    lonely = front()  # its Redis database has no workers
    not_ready = requests.get(f"{lonely.base_url}/readyz", timeout=10)
    assert not_ready.status_code == 503
    assert not_ready.json()["checks"]["workers:tts"].startswith("down")
    assert requests.get(f"{lonely.base_url}/healthz", timeout=5).status_code == 200


def test_knowledge_upload_needs_the_project_key_and_feeds_retrieval(front):
    from voiceapp.dialog.knowledge import search

    app = front(kb_max_bytes=4000)
    key = create_key(app.db, app.settings, "site")
    url = f"{app.base_url}/api/v1/voice/projects/site/knowledge"
    doc = {"source": "parking.md", "text": "# Parking\n\nFree parking is behind the bakery on Elm Street."}
    assert requests.post(url, json={"documents": [doc]}, timeout=10).status_code == 401
    assert (
        requests.post(
            url, json={"documents": [doc]}, headers={"Authorization": "Bearer vk_nope"}, timeout=10
        ).status_code
        == 403
    )
    ok = requests.post(url, json={"documents": [doc]}, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert ok.status_code == 201 and ok.json()["passages"] >= 1
    found = search(app.db, app.settings, "site", "where can I park", k=1)
    assert found and "Elm Street" in found[0].text
    big = {"source": "big.md", "text": "x" * 5000}
    too_big = requests.post(url, json={"documents": [big]}, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert too_big.status_code == 413
    bad = requests.post(
        url,
        json={"documents": [{"source": {"$gt": ""}, "text": "x"}]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert bad.status_code == 400


def test_recognition_goes_to_the_gpu_queue_only_while_a_gpu_worker_is_alive(front):
    from voiceapp.heartbeats import beat

    app = front(stt_gpu_queue="stt.gpu")
    session = _post_session(app).json()
    url = f"{app.base_url}/api/v1/voice/sessions/{session['session_id']}/turns"
    audio = shared_file("jfk.flac").read_bytes()
    assert requests.post(url, data=audio, headers=_auth(session), timeout=30).status_code == 202
    assert (app.redis.llen("stt"), app.redis.llen("stt.gpu")) == (1, 0)
    beat(app.redis, "gpu-worker@host", {"stt.gpu"}, ttl=30)
    assert requests.post(url, data=audio, headers=_auth(session), timeout=30).status_code == 202
    assert (app.redis.llen("stt"), app.redis.llen("stt.gpu")) == (1, 1)
    ready = requests.get(f"{app.base_url}/readyz", timeout=10).json()
    assert ready["checks"]["workers:stt"] == "ok"  # the GPU worker serves recognition


def test_ws_port_serves_websockets_from_a_separate_process(live, tmp_path):
    import devstack as stack

    settings = live.settings.replace(home=str(tmp_path), api_port=stack.free_port(), ws_port=stack.free_port())
    stack.up(settings, workers=())
    try:
        status = stack.status(settings)
        assert status["ws"]["alive"] and status["api"]["alive"] and status["ws"]["pid"] != status["api"]["pid"]
        base = stack.api_url(settings)
        session = requests.post(f"{base}/api/v1/voice/sessions", json={"project": "demo"}, timeout=10).json()
        assert session["websocket_url"].startswith(f"ws://127.0.0.1:{settings.ws_port}/api/v1/voice/ws/")
        sock = websocket.create_connection(f"{session['websocket_url']}?token={session['token']}", timeout=10)
        try:
            sock.send(json.dumps({"type": "ping"}))
            assert json.loads(sock.recv())["type"] == "pong"
        finally:
            sock.close()
    finally:
        stack.down(settings)
