"""The site owner's console (/admin/): access control, escaping, and each page's data, on the MongoDB-wire server
and a real Redis through Flask's test client; then real Chromium against the whole stack."""

from __future__ import annotations

import re
import time
import uuid
from datetime import datetime, timedelta, timezone

import itsdangerous
import pytest

import devstack as stack
from voiceapp import create_app
from voiceapp.config import Settings
from voiceapp.dialog.knowledge import add_documents, list_sources
from voiceapp.errors import BadRequest
from voiceapp.storage import interactions, sessions, unanswered
from voiceapp.storage.audio import REPLIES_BUCKET, UPLOADS_BUCKET, delete_audio, put_audio
from voiceapp.storage.projects import create_key
from voiceapp.tts import cost
from voiceapp.web.admin import auth, data

OPERATOR_KEY = "op_" + "k" * 40
SCRIPT = "<script>alert('owned')</script>"
WAV = b"RIFF....WAVEfmt fake-wav-bytes"


@pytest.fixture(scope="module")
def redis_url():
    """A private redis-server without persistence on a free port (this module's rate limits and sign-ins only)."""
    with stack.private_redis() as url:
        yield url


@pytest.fixture
def console(mongo_uri, redis_url):
    """An app on a fresh database, with projects 'shop' and 'other' (each with a key) and one turn each."""
    settings = Settings.from_env(
        {},
        mongo_uri=mongo_uri,
        mongo_db=f"admin_{uuid.uuid4().hex[:10]}",
        redis_url=redis_url,
        secret_key="s" * 40,
        admin_key=OPERATOR_KEY,
        project_daily_budget=2.0,
        cost_alert_threshold=1.0,
    )
    app = create_app(settings)
    db = app.extensions["voiceapp"].db
    keys = {p: create_key(db, settings, p) for p in ("shop", "other")}
    turns = {
        "shop": _turn(db, settings, "shop", "what time do you open on saturday", "We open at 8:00 on Saturday."),
        "other": _turn(db, settings, "other", "secret question of other", "secret answer of other"),
    }
    return app, settings, db, keys, turns


def _turn(db, settings, project, transcript, reply, *, intent="question", when=None, **extra):
    """A finished turn with a stored upload and reply audio, as the pipeline leaves it."""
    session = sessions.create_session(db, settings, project, "en-US", "")
    upload = put_audio(db, WAV, bucket=UPLOADS_BUCKET, filename="u.wav", content_type="audio/wav")
    spoken = put_audio(db, WAV + b"reply", bucket=REPLIES_BUCKET, filename="r.wav", content_type="audio/wav")
    turn_id = interactions.create_turn(db, settings, session, upload, accepted_at=time.time(), source="http")
    fields = {
        "status": "done",
        "transcript": transcript,
        "reply_text": reply,
        "intent": intent,
        "intent_confidence": 0.8,
        "sources": ["hours.md#Opening hours"],
        "timings": {"stt_queue_s": 0.01, "stt_s": 0.4, "dialog_s": 0.03, "tts_s": 0.3, "total_s": 0.9},
        "tts": {"provider": "piper", "audio_ids": [spoken], "cache_hits": 1, "cache_misses": 2},
        "audio_id": spoken,
        **extra,
    }
    interactions.update_turn(db, settings, turn_id, **fields)
    if when is not None:
        db[settings.interactions_collection].update_one({"_id": turn_id}, {"$set": {"timestamp": when}})
    if intent == "fallback":  # the dialog stage records a refused question in the unanswered store
        unanswered.record(db, settings, project, transcript, session["session_id"], turn_id)
        if when is not None:
            db[settings.unanswered_collection].update_one({"turn_id": turn_id}, {"$set": {"asked_at": when}})
    return {"turn_id": turn_id, "session_id": session["session_id"], "upload_id": upload, "reply_id": spoken}


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the page has a CSRF token"
    return match.group(1)


def _sign_in(client, project: str, key: str):
    token = _csrf(client.get("/admin/").get_data(as_text=True))
    return client.post("/admin/sign-in", data={"project": project, "key": key, "csrf_token": token})


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# ---------------------------------------------------------------- access control


def test_no_key_gets_the_sign_in_page_and_no_data(console):
    app, _settings, _db, _keys, turns = console
    client = app.test_client()
    for path in ("/admin/p/shop/", "/admin/p/shop/unanswered", "/admin/p/shop/knowledge", "/admin/p/shop/costs"):
        page = client.get(path)
        assert page.status_code == 401, path
        body = page.get_data(as_text=True)
        assert 'action="/admin/sign-in"' in body and "saturday" not in body, path
    audio = client.get(f"/admin/p/shop/audio/visitor/{turns['shop']['upload_id']}")
    assert audio.status_code == 401 and audio.json["error"]["code"] == "project_key_required"
    assert audio.data != WAV
    posted = client.post("/admin/p/shop/knowledge/upload", data={"source": "x.md", "text": "x"})
    assert posted.status_code == 401


def test_project_key_signs_in_with_a_strict_short_lived_cookie_and_sees_only_its_project(console):
    app, settings, _db, keys, turns = console
    client = app.test_client()
    signed = _sign_in(client, "shop", keys["shop"])
    assert signed.status_code == 303 and signed.headers["Location"].endswith("/admin/p/shop/")
    cookie = signed.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and f"Max-Age={settings.admin_session_ttl}" in cookie
    assert keys["shop"] not in cookie, "the key itself never travels in the cookie"
    assert "Secure" not in cookie, "plain HTTP on 127.0.0.1: a Secure cookie would never come back"
    behind_tls = create_app(settings.replace(public_url="https://voice.example")).test_client()
    assert "; Secure" in _sign_in(behind_tls, "shop", keys["shop"]).headers["Set-Cookie"]
    page = client.get("/admin/p/shop/")
    assert page.status_code == 200
    assert "what time do you open on saturday" in page.get_data(as_text=True)
    foreign = client.get("/admin/p/other/")
    assert foreign.status_code == 403 and "secret question of other" not in foreign.get_data(as_text=True)
    foreign_audio = client.get(f"/admin/p/other/audio/visitor/{turns['other']['upload_id']}")
    assert foreign_audio.status_code == 403


def test_wrong_projects_key_is_refused_by_form_and_bearer(console):
    app, _settings, _db, keys, _turns = console
    client = app.test_client()
    refused = _sign_in(client, "shop", keys["other"])
    assert refused.status_code == 403 and "invalid key for this project" in refused.get_data(as_text=True)
    assert client.get("/admin/p/shop/").status_code == 401, "a refused sign-in leaves the visitor signed out"
    bearer = app.test_client().get("/admin/p/shop/", headers=_bearer(keys["other"]))
    assert bearer.status_code == 403 and bearer.json["error"]["code"] == "invalid_project_key"
    nonsense = app.test_client().get("/admin/p/shop/", headers=_bearer("vk_nonsense"))
    assert nonsense.status_code == 403


def test_bearer_project_key_works_for_scripts_without_a_cookie(console):
    app, _settings, _db, keys, turns = console
    page = app.test_client().get("/admin/p/shop/", headers=_bearer(keys["shop"]))
    assert page.status_code == 200 and "Set-Cookie" not in page.headers
    assert "what time do you open on saturday" in page.get_data(as_text=True)
    audio = app.test_client().get(
        f"/admin/p/shop/audio/visitor/{turns['shop']['upload_id']}", headers=_bearer(keys["shop"])
    )
    assert audio.status_code == 200 and audio.data == WAV
    scripted = app.test_client().get("/admin/p/shop/", headers={**_bearer(keys["shop"]), "Accept": "application/json"})
    assert scripted.status_code == 200 and scripted.mimetype == "application/json"
    [conversation] = scripted.json["conversations"]
    assert conversation["turns"][0]["transcript"] == "what time do you open on saturday"
    assert conversation["turns"][0]["timings"]["stt_s"] == 0.4
    costs = app.test_client().get("/admin/p/shop/costs?format=json", headers=_bearer(keys["shop"])).json
    assert costs["hits"] == 1 and costs["misses"] == 2 and costs["turn_count"] == 1
    unsigned = app.test_client().get("/admin/p/shop/unanswered?format=json")
    assert unsigned.status_code == 401 and unsigned.json["error"]["code"] == "project_key_required"


def test_expired_cookie_is_signed_out(console):
    app, settings, _db, keys, _turns = console

    class OldSigner(itsdangerous.TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - settings.admin_session_ttl - 60

    payload = {"p": "shop", "c": "token", "k": auth.key_print(keys["shop"])}
    old = itsdangerous.URLSafeTimedSerializer(settings.secret_key, salt=auth._SALT, signer=OldSigner).dumps(payload)
    fresh = itsdangerous.URLSafeTimedSerializer(settings.secret_key, salt=auth._SALT).dumps(payload)
    client = app.test_client()
    client.set_cookie(auth.COOKIE, old, path="/admin")
    expired = client.get("/admin/p/shop/")
    assert expired.status_code == 401 and "saturday" not in expired.get_data(as_text=True)
    client.set_cookie(auth.COOKIE, fresh, path="/admin")
    assert client.get("/admin/p/shop/").status_code == 200, "the same cookie, signed now, is accepted"
    forged = itsdangerous.URLSafeTimedSerializer("another-secret", salt=auth._SALT).dumps(payload)
    client.set_cookie(auth.COOKIE, forged, path="/admin")
    assert client.get("/admin/p/shop/").status_code == 401


def test_forms_without_the_csrf_token_are_refused_and_change_nothing(console):
    app, settings, db, keys, _turns = console
    client = app.test_client()
    client.get("/admin/")
    no_token = client.post("/admin/sign-in", data={"project": "shop", "key": keys["shop"]})
    assert no_token.status_code == 403 and no_token.json["error"]["code"] == "csrf_invalid"
    assert _sign_in(client, "shop", keys["shop"]).status_code == 303
    token = _csrf(client.get("/admin/p/shop/knowledge").get_data(as_text=True))
    missing = client.post("/admin/p/shop/knowledge/upload", data={"source": "a.md", "text": "# A\n\nalpha"})
    wrong = client.post(
        "/admin/p/shop/knowledge/upload", data={"source": "a.md", "text": "# A\n\nalpha", "csrf_token": "x" + token}
    )
    assert missing.status_code == 403 and wrong.status_code == 403
    assert list_sources(db, settings, "shop") == {}
    ok = client.post(
        "/admin/p/shop/knowledge/upload", data={"source": "a.md", "text": "# A\n\nalpha", "csrf_token": token}
    )
    assert ok.status_code == 200 and list_sources(db, settings, "shop") == {"a.md": 1}
    not_deleted = client.post("/admin/p/shop/knowledge/delete", data={"source": "a.md"})
    assert not_deleted.status_code == 403 and list_sources(db, settings, "shop") == {"a.md": 1}
    assert client.post("/admin/sign-out", data={}).status_code == 403


def test_sign_in_attempts_are_rate_limited_per_ip(console, redis_url):
    _app, settings, _db, keys, _turns = console
    limited = create_app(settings.replace(rate_limit_ip="3/minute", redis_url=redis_url.rsplit("/", 1)[0] + "/7"))
    limited.extensions["voiceapp"].redis.flushdb()
    client = limited.test_client()
    statuses = [_sign_in(client, "shop", "vk_guess").status_code for _ in range(3)]
    assert statuses == [403, 403, 403]
    blocked = _sign_in(client, "shop", keys["shop"])
    assert blocked.status_code == 429 and blocked.json["error"]["code"] == "rate_limited"
    assert client.get("/admin/p/shop/").status_code == 401


def test_operator_key_sees_every_project(console):
    app, _settings, _db, _keys, _turns = console
    client = app.test_client()
    signed = _sign_in(client, "", OPERATOR_KEY)
    assert signed.status_code == 303 and signed.headers["Location"].endswith("/admin/")
    home = client.get("/admin/").get_data(as_text=True)
    assert "/admin/p/shop/" in home and "/admin/p/other/" in home
    counts = re.findall(r'<a href="/admin/p/(\w+)/">\w+</a></td>\s*<td class="turns-today">(\d+)</td>', home)
    assert counts == [("other", "1"), ("shop", "1")]
    assert "secret question of other" in client.get("/admin/p/other/").get_data(as_text=True)
    assert "what time do you open" in client.get("/admin/p/shop/").get_data(as_text=True)
    straight = _sign_in(app.test_client(), "other", OPERATOR_KEY)
    assert straight.status_code == 303 and straight.headers["Location"].endswith("/admin/p/other/")
    scripted = app.test_client().get("/admin/p/other/", headers=_bearer(OPERATOR_KEY))
    assert scripted.status_code == 200 and OPERATOR_KEY not in scripted.get_data(as_text=True)


def test_without_an_operator_key_set_no_empty_key_signs_in(console):
    _app, settings, _db, _keys, _turns = console
    bare = create_app(settings.replace(admin_key=""))
    client = bare.test_client()
    assert _sign_in(client, "", "").status_code == 401
    assert bare.test_client().get("/admin/p/shop/", headers=_bearer(OPERATOR_KEY)).status_code == 403


def test_revoking_the_key_signs_its_cookie_out(console):
    app, settings, db, keys, _turns = console
    client = app.test_client()
    assert _sign_in(client, "shop", keys["shop"]).status_code == 303
    second_key = create_key(db, settings, "shop")
    assert client.get("/admin/p/shop/").status_code == 200, "another key added to the project changes nothing"
    db[settings.projects_collection].update_one({"project": "shop"}, {"$pull": {"key_hashes": {"$ne": "x"}}})
    db[settings.projects_collection].update_one({"project": "shop"}, {"$push": {"key_hashes": _sha(second_key)}})
    assert client.get("/admin/p/shop/").status_code == 401, "the key that signed in was revoked"
    operator = app.test_client()
    assert _sign_in(operator, "", OPERATOR_KEY).status_code == 303
    rotated = create_app(settings.replace(admin_key="op_" + "z" * 40)).test_client()
    rotated.set_cookie(auth.COOKIE, operator.get_cookie(auth.COOKIE, path="/admin").value, path="/admin")
    assert rotated.get("/admin/p/other/").status_code == 401, "a new VOICE_ADMIN_KEY signs old operator cookies out"


def _sha(key: str) -> str:
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()


def test_a_short_operator_key_is_refused_at_start_without_showing_it():
    from voiceapp.config import SettingsError

    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"VOICE_ADMIN_KEY": "hunter2"})
    assert "VOICE_ADMIN_KEY=<hidden>" in str(refused.value) and "hunter2" not in str(refused.value)
    assert Settings.from_env({"VOICE_ADMIN_KEY": OPERATOR_KEY}).admin_key == OPERATOR_KEY


def test_sign_out_forgets_the_sign_in(console):
    app, _settings, _db, keys, _turns = console
    client = app.test_client()
    _sign_in(client, "shop", keys["shop"])
    token = _csrf(client.get("/admin/p/shop/").get_data(as_text=True))
    assert client.post("/admin/sign-out", data={"csrf_token": token}).status_code == 303
    assert client.get("/admin/p/shop/").status_code == 401


# ---------------------------------------------------------------- escaping and pages


def test_stored_script_in_a_transcript_and_in_knowledge_is_escaped(console):
    app, settings, db, keys, _turns = console
    _turn(db, settings, "shop", f"hi {SCRIPT}", f"reply {SCRIPT}", intent="fallback", sources=[f"{SCRIPT}#x"])
    add_documents(db, settings, "shop", [(f"{SCRIPT}.txt", f"Passage with {SCRIPT} inside.")], "text")
    client = app.test_client()
    headers = _bearer(keys["shop"])
    pages = [
        client.get("/admin/p/shop/", headers=headers),
        client.get("/admin/p/shop/unanswered", headers=headers),
        client.get("/admin/p/shop/knowledge", headers=headers, query_string={"source": f"{SCRIPT}.txt"}),
        client.get("/admin/p/shop/knowledge", headers=headers, query_string={"question": SCRIPT}),
    ]
    for page in pages:
        body = page.get_data(as_text=True)
        assert page.status_code == 200
        assert SCRIPT not in body and "<script>alert" not in body
        assert "&lt;script&gt;alert(" in body
    assert "script-src 'self'" in pages[0].headers["Content-Security-Policy"]


def test_conversations_show_each_turn_with_timings_sources_errors_and_retained_audio(console):
    app, settings, db, keys, turns = console
    failed = _turn(
        db,
        settings,
        "shop",
        "broken one",
        "",
        status="error",
        error={"stage": "tts", "code": "tts_failed", "message": "provider down"},
    )
    delete_audio(db, failed["upload_id"], UPLOADS_BUCKET)
    # A turn still queued has none of the stages' fields: it is listed, not a server error.
    session = sessions.create_session(db, settings, "shop", "en-US", "")
    queued = interactions.create_turn(db, settings, session, None, accepted_at=time.time(), source="http")
    live_turn = _turn(db, settings, "shop", "no confidence", "x", intent="greeting")
    db[settings.interactions_collection].update_one({"_id": live_turn["turn_id"]}, {"$unset": {"intent_confidence": 1}})
    client = app.test_client()
    headers = _bearer(keys["shop"])
    body = client.get("/admin/p/shop/", headers=headers).get_data(as_text=True)
    shop = turns["shop"]
    assert f'data-turn-id="{shop["turn_id"]}"' in body
    assert "We open at 8:00 on Saturday." in body and "hours.md#Opening hours" in body
    assert '<td data-stage="stt_s">0.400</td>' in body and '<td data-stage="total_s">0.900</td>' in body
    assert f"/admin/p/shop/audio/visitor/{shop['upload_id']}" in body
    assert f"/admin/p/shop/audio/reply/{shop['reply_id']}" in body
    assert "Error in tts: tts_failed — provider down" in body
    assert f"/admin/p/shop/audio/visitor/{failed['upload_id']}" not in body
    assert "no longer retained" in body
    assert f'data-turn-id="{queued}"' in body and "(no transcript)" in body
    assert 'intent <span class="intent">greeting</span>' in body
    reply = client.get(f"/admin/p/shop/audio/reply/{shop['reply_id']}", headers=headers)
    assert reply.status_code == 200 and reply.data == WAV + b"reply" and reply.mimetype == "audio/wav"
    # Another project's audio is not served even with a valid key: it must belong to this project's turns.
    other = client.get(f"/admin/p/shop/audio/visitor/{turns['other']['upload_id']}", headers=headers)
    assert other.status_code == 404 and other.json["error"]["code"] == "audio_not_found"
    assert client.get("/admin/p/shop/audio/bogus/123", headers=headers).status_code == 404
    # A turn of last week is not shown for today, but is for the week.
    old = _turn(
        db, settings, "shop", "a question from last week", "x", when=datetime.now(timezone.utc) - timedelta(days=3)
    )
    today = client.get("/admin/p/shop/", headers=headers).get_data(as_text=True)
    week = client.get("/admin/p/shop/?span=week", headers=headers).get_data(as_text=True)
    assert old["turn_id"] not in today and old["turn_id"] in week
    bad = client.get("/admin/p/shop/?day=yesterday", headers=headers)
    assert bad.status_code == 400 and bad.json["error"]["code"] == "invalid_field"


def test_conversations_are_paged_by_session(console, monkeypatch):
    from voiceapp.web.admin import views

    app, settings, db, keys, turns = console
    newer = _turn(db, settings, "shop", "the newest question", "x")
    monkeypatch.setattr(views, "SESSIONS_PER_PAGE", 1)
    client = app.test_client()
    headers = _bearer(keys["shop"])
    first = client.get("/admin/p/shop/", headers=headers).get_data(as_text=True)
    assert newer["turn_id"] in first and turns["shop"]["turn_id"] not in first
    assert "2 sessions, page 1 of 2." in first and 'class="older"' in first and 'class="newer"' not in first
    second = client.get("/admin/p/shop/?page=2", headers=headers).get_data(as_text=True)
    assert (
        turns["shop"]["turn_id"] in second
        and newer["turn_id"] not in second
        and 'class="newer"' in second
        and 'class="older"' not in second
    )
    beyond = client.get("/admin/p/shop/?page=3", headers=headers)
    assert beyond.status_code == 400 and beyond.json["error"]["code"] == "invalid_field"


def test_unanswered_questions_are_grouped_counted_and_link_to_the_knowledge_page(console):
    app, settings, db, keys, _turns = console
    for text in ("Do you sell bicycles?", "do you sell BICYCLES", "Do you sell  bicycles?", "Where is Mars?"):
        _turn(db, settings, "shop", text, "Sorry, I don't know that.", intent="fallback")
    _turn(db, settings, "other", "Do you sell bicycles?", "Sorry", intent="fallback")
    client = app.test_client()
    headers = _bearer(keys["shop"])
    body = client.get("/admin/p/shop/unanswered", headers=headers).get_data(as_text=True)
    rows = re.findall(r'<td class="question">(.*?)</td>\s*<td class="count">(\d+)</td>', body)
    assert rows == [("Do you sell bicycles?", "3"), ("Where is Mars?", "1")]
    listed = client.get("/admin/p/shop/unanswered?format=json", headers=headers).json["questions"]
    assert [(q["text"], q["count"]) for q in listed] == [("Do you sell bicycles?", 3), ("Where is Mars?", 1)]
    assert "what time do you open" not in body, "answered questions are not listed"
    asked = re.search(r'<a class="last-asked" href="([^"]+)"', body).group(1).replace("&amp;", "&")
    one_session = client.get(asked, headers=headers).get_data(as_text=True)
    assert one_session.count('class="turn ') == 1 and "Only session" in one_session
    assert asked.split("#")[1] in one_session and "Where is Mars?" not in one_session
    link = re.search(r'<a class="add-answer"[^>]* href="([^"]+)"', body).group(1).replace("&amp;", "&")
    knowledge = client.get(link, headers=headers).get_data(as_text=True)
    assert '<textarea id="doc-text" name="text" rows="8"># Do you sell bicycles?' in knowledge


def test_knowledge_upload_replace_delete_and_try_a_question(console):
    app, settings, db, keys, _turns = console
    client = app.test_client()
    _sign_in(client, "shop", keys["shop"])
    token = _csrf(client.get("/admin/p/shop/knowledge").get_data(as_text=True))
    doc = "# Bicycles\n\nWe repair bicycles every weekday from nine to five in the back workshop.\n"
    from io import BytesIO

    saved = client.post(
        "/admin/p/shop/knowledge/upload",
        data={"csrf_token": token, "file": (BytesIO(doc.encode()), "bikes.md")},
        content_type="multipart/form-data",
    )
    assert saved.status_code == 200 and "Saved bikes.md: 1 passages." in saved.get_data(as_text=True)
    passages = client.get("/admin/p/shop/knowledge?source=bikes.md").get_data(as_text=True)
    assert "We repair bicycles every weekday" in passages
    tried = client.post(
        "/admin/p/shop/knowledge/try", data={"csrf_token": token, "question": "When do you repair bicycles?"}
    )
    body = tried.get_data(as_text=True)
    assert tried.status_code == 200 and 'class="intent">question<' in body
    assert "bikes.md#Bicycles" in body and "<blockquote>We repair bicycles every weekday" in body
    score = float(re.search(r'class="score">([0-9.]+)<', body).group(1))
    assert score > 0
    assert '<textarea id="doc-text" name="text" rows="8"></textarea>' in body, "a tried question is not a draft"
    replaced = client.post(
        "/admin/p/shop/knowledge/upload",
        data={"csrf_token": token, "source": "bikes.md", "text": "# Bicycles\n\nWe no longer repair bicycles."},
    )
    assert replaced.status_code == 200
    assert "We no longer repair" in client.get("/admin/p/shop/knowledge?source=bikes.md").get_data(as_text=True)
    unknown = client.post("/admin/p/shop/knowledge/try", data={"csrf_token": token, "question": "Is Pluto a planet?"})
    assert 'class="intent">fallback<' in unknown.get_data(as_text=True)
    too_big = client.post(
        "/admin/p/shop/knowledge/upload",
        data={"csrf_token": token, "source": "big.txt", "text": "x" * (settings.kb_max_bytes + 1)},
    )
    assert too_big.status_code == 400 and "VOICE_KB_MAX_BYTES" in too_big.get_data(as_text=True)
    not_utf8 = client.post(
        "/admin/p/shop/knowledge/upload",
        data={"csrf_token": token, "file": (BytesIO(b"\xff\xfe\x00bad"), "bad.txt")},
        content_type="multipart/form-data",
    )
    assert not_utf8.status_code == 400 and "UTF-8" in not_utf8.get_data(as_text=True)
    deleted = client.post("/admin/p/shop/knowledge/delete", data={"csrf_token": token, "source": "bikes.md"})
    assert deleted.status_code == 200 and list_sources(db, settings, "shop") == {}


def test_costs_and_speed_show_spend_against_threshold_and_budget_cache_and_percentiles(console):
    app, settings, db, keys, _turns = console
    paid = settings.replace(enable_cost_tracking=True)
    cost.record(db, paid, project="shop", session_id="s1", usage={"elevenlabs": 5000}, cached_characters=100)
    cost.record(db, paid, project="other", session_id="s2", usage={"azure": 1000})
    _turn(db, settings, "shop", "second", "x", timings={"stt_s": 0.8, "dialog_s": 0.05, "tts_s": 0.5, "total_s": 1.7})
    body = app.test_client().get("/admin/p/shop/costs", headers=_bearer(keys["shop"])).get_data(as_text=True)
    day = cost.today()
    row = re.search(
        rf"<tr[^>]*><td>{day}</td><td>([0-9.]+)</td>\s*<td>([0-9.]+)</td>\s*<td>([0-9.]+)</td><td>(\w*)</td>", body
    )
    assert row, body
    assert row.groups() == ("1.5000", "1.5000", "1.5160", "raised")  # 5,000 chars at $0.30/1k; all projects
    assert "daily budget 2.00, alert threshold (all projects) 1.00" in body
    assert '<td class="chars">5000 (+100 from cache)</td>' in body
    assert body.count('<svg class="chart"') == 3 and 'class="limit"' in body
    assert '<strong class="cache-ratio">33%</strong>' in body  # 2 hits, 4 misses over the two turns
    stt = re.search(
        r'<tr data-stage="stt_s">.*?<td>([0-9.]+) s</td><td>([0-9.]+) s</td><td>(\d+)</td>', body, re.DOTALL
    )
    assert stt.groups() == ("0.600", "0.780", "2")
    assert 'class="turns-per-hour"' in body


def test_costs_page_still_loads_when_redis_is_down(console):
    _app, settings, _db, keys, _turns = console
    cut_off = create_app(settings.replace(redis_url=f"redis://127.0.0.1:{stack.free_port()}/0"))
    page = cut_off.test_client().get("/admin/p/shop/costs", headers=_bearer(keys["shop"]))
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert '<tr class="first-audio"><th scope="row">End of speech → first reply audio</th><td>—</td>' in body
    assert '<tr data-stage="total_s">' in body


def test_period_is_a_utc_day_or_the_week_ending_that_day():
    week = data.period("2026-12-03", "week")
    assert (week.start.isoformat(), week.end.isoformat()) == ("2026-11-27T00:00:00+00:00", "2026-12-04T00:00:00+00:00")
    assert (week.end_day, week.shifted(-1), week.shifted(1)) == ("2026-12-03", "2026-11-26", "2026-12-10")
    day = data.period("2026-12-03", "day")
    assert (day.shifted(-1), day.shifted(1)) == ("2026-12-02", "2026-12-04")
    with pytest.raises(BadRequest):
        data.period("2026-13-01", "day")
    with pytest.raises(BadRequest):
        data.period(None, "month")


def test_percentile_interpolates():
    assert data.percentile([], 50) is None
    assert data.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert data.percentile([0.0, 10.0], 95) == 9.5


def test_first_audio_from_kept_events():
    from voiceapp.events import Event, EventType

    turn = {"turn_id": "t1", "accepted_at": 100.0, "source": "http"}
    events = [
        Event(EventType.TRANSCRIPT, "s", 1, "t1", {"final": True}, ts=100.5),
        Event(EventType.AUDIO, "s", 2, "t1", {}, ts=101.25),
        Event(EventType.AUDIO, "s", 3, "t1", {}, ts=102.0),
        Event(EventType.AUDIO, "s", 4, "t2", {}, ts=100.1),
    ]
    assert data.first_audio_seconds(turn, events) == 1.25
    assert data.first_audio_seconds({**turn, "source": "ws-live"}, events) == 0.75
    assert data.first_audio_seconds({**turn, "timings": {"first_audio_s": 0.5}}, []) == 0.5
    assert data.first_audio_seconds(turn, []) is None


# ---------------------------------------------------------------- real Chromium against the whole stack

UNANSWERABLE = "Do you sell helicopters?"


def _padded_wav(wav: bytes, path, before: float, after: float):
    """`wav` with silence around it, written to `path` (Chromium loops its fake microphone file)."""
    import io
    import wave

    with wave.open(io.BytesIO(wav), "rb") as src:
        params, frames = src.getparams(), src.readframes(src.getnframes())
    silence = b"\x00\x00" * params.nchannels
    with wave.open(str(path), "wb") as dst:
        dst.setparams(params)
        dst.writeframes(silence * int(params.framerate * before) + frames + silence * int(params.framerate * after))
    return path


def _ask_with_widget(driver, live, microphone) -> tuple[str, dict]:
    """A visitor asks through the widget on the demo page (hands-free, Chromium's fake microphone says the file).

    Returns the reply shown and the turn recorded for it, once the turn is done.
    """
    from tests.test_widget import Page, _launch

    browser = _launch(driver, microphone)
    try:
        widget = Page(browser, live, "hands-free")
        started = sessions.utcnow()
        widget.button.click()
        reply = widget.wait_reply()
        widget.wait_for("window.__vw.playback.length > 0")
    finally:
        browser.close()
    interactions_ = live.db[live.settings.interactions_collection]
    query = {"project": "demo", "source": "ws-live", "timestamp": {"$gte": started}}
    for _ in range(150):  # the widget hears the first chunk before the turn is marked done
        turn = interactions_.find_one(query, sort=[("timestamp", -1)])
        if turn and turn.get("status") == "done":
            return reply, turn
        time.sleep(0.2)
    pytest.fail(f"the widget's turn was not recorded as done: {turn}")


def _audio_plays(page, selector: str) -> float:
    """Load the first matching <audio> in the page and return its duration (seconds) once playable."""
    return page.evaluate(
        """sel => new Promise((resolve, reject) => {
             const el = document.querySelector(sel);
             if (!el) return reject(new Error('no ' + sel));
             el.addEventListener('loadedmetadata', () => resolve(el.duration), {once: true});
             el.addEventListener('error', () => reject(new Error('audio error ' + (el.error && el.error.code))), {once: true});
             el.preload = 'auto'; el.load();
           })""",
        selector,
    )


def test_console_in_chromium_shows_a_widget_turn_its_audio_and_timings_and_an_unanswered_question(
    live, demo_kb, tmp_path
):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (in the dev extra)")
    from tests.test_widget import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, _padded
    from voiceapp.tts.registry import get_provider

    key = create_key(live.db, live.settings, "demo")
    # The unanswerable question is spoken by the shipped Piper voice into the fake microphone.
    helicopters = get_provider(live.settings, "piper").synthesize(UNANSWERABLE, None, None).audio
    with sync_api.sync_playwright() as driver:
        reply, turn = _ask_with_widget(driver, live, _padded(tmp_path / "question.wav", 0.5, 30))
        assert "8:00" in reply and "saturday" in turn["transcript"].lower(), (reply, turn)
        sorry, unanswered = _ask_with_widget(driver, live, _padded_wav(helicopters, tmp_path / "heli.wav", 0.5, 30))
        assert unanswered["intent"] == "fallback" and "helicopter" in unanswered["transcript"].lower(), unanswered
        assert "know" in sorry.lower(), sorry  # the visitor heard the honest "I don't know"
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1200, "height": 900})
            page = context.new_page()
            page.goto(f"{live.base_url}/admin/p/demo/")
            assert "Sign in" in page.title(), "no data without a key"
            page.fill("#project", "demo")
            page.fill("#key", key)
            # The form works from the keyboard; the sign-in page had the same URL, so wait for the navigation itself.
            with page.expect_navigation():
                page.keyboard.press("Enter")
            page.locator('nav[aria-label="Console sections"]').wait_for()
            assert page.url == f"{live.base_url}/admin/p/demo/"
            page.keyboard.press("Tab")  # keyboard users first meet the skip link, then the sections
            assert page.evaluate("document.activeElement.textContent") == "Skip to content"
            row = page.locator(f'li[data-turn-id="{turn["turn_id"]}"]')
            row.wait_for()
            assert "saturday" in row.locator(".transcript").inner_text().lower()
            assert "8:00" in row.locator(".reply-text").inner_text()
            assert float(row.locator('td[data-stage="stt_s"]').inner_text()) > 0
            assert float(row.locator('td[data-stage="total_s"]').inner_text()) > 0
            selector = f'li[data-turn-id="{turn["turn_id"]}"]'
            assert _audio_plays(page, f"{selector} audio.visitor-audio") > 0.5
            assert _audio_plays(page, f"{selector} audio.reply-audio") > 0.3
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            row.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "admin-conversations.png"), full_page=True)

            page.click("text=Unanswered")
            question = page.locator("td.question", has_text=re.compile("helicopter", re.IGNORECASE))
            question.wait_for()
            assert int(question.locator("xpath=../td[@class='count']").inner_text()) >= 1
            page.screenshot(path=str(ARTIFACTS / "admin-unanswered.png"), full_page=True)
            question.locator("xpath=../td/a[@class='add-answer']").click()
            assert "helicopter" in page.locator("#doc-text").input_value().lower()
            page.fill("#try-q", "What time do you open on Saturday?")
            page.click("form[action$='/knowledge/try'] button")
            assert "8:00" in page.locator(".trial .reply-text").inner_text()
            assert page.locator(".trial blockquote").count() >= 1
            page.screenshot(path=str(ARTIFACTS / "admin-knowledge.png"), full_page=True)

            page.click("text=Costs & speed")
            first_audio = page.locator("tr.first-audio td").first.inner_text()
            assert first_audio.endswith(" s") and float(first_audio[:-2]) > 0, first_audio
            assert page.locator("svg.chart").count() == 3
            page.screenshot(path=str(ARTIFACTS / "admin-costs.png"), full_page=True)
            context.close()
        finally:
            browser.close()
