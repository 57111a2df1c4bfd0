"""Barge-in: an `interrupt` over the WebSocket stops the reply being spoken and records what was played."""

import json

import requests
import websocket

from tests.support import new_session, piper_take
from voiceapp.dialog.knowledge import add_documents
from voiceapp.storage.projects import create_key

RETURNS = """# Returns

You can return any item within thirty days of purchase. Bring the receipt and the item to the front counter.
Refunds always go back to the card you paid with. Gift cards can never be refunded or exchanged for cash.
"""


def test_interrupt_stops_synthesis_and_records_what_was_played(live):
    add_documents(live.db, live.settings, "bargein", [("returns.md", RETURNS)])
    question = piper_take(live.settings, "How do I return an item and get a refund?")
    session = new_session(live.base_url, "bargein", key=create_key(live.db, live.settings, "bargein"))
    auth = {"Authorization": f"Bearer {session['token']}"}
    ws = websocket.create_connection(
        f"{live.ws_url}/api/v1/voice/ws/{session['session_id']}?token={session['token']}", timeout=60
    )
    try:
        posted = requests.post(
            f"{live.base_url}/api/v1/voice/sessions/{session['session_id']}/turns",
            data=question.audio,
            headers=auth,
            timeout=30,
        )
        turn_id = posted.json()["turn_id"]
        events = []
        while True:
            event = json.loads(ws.recv())
            events.append(event)
            if event["type"] == "reply":
                assert len(event["text"].split(". ")) >= 2, event["text"]  # a reply of several sentences
            if event["type"] == "audio" and len([e for e in events if e["type"] == "audio"]) == 1:
                ws.send(json.dumps({"type": "interrupt", "turn_id": turn_id, "played_chunks": 1}))
            if event["type"] in ("done", "error") and event.get("seq") is not None:
                break
    finally:
        ws.close()
    audio_events = [e for e in events if e["type"] == "audio"]
    assert events[-1]["type"] == "done" and events[-1]["status"] == "interrupted"
    assert len(audio_events) == 1 and audio_events[0]["total"] > 1  # the rest was never spoken
    doc = live.db[live.settings.interactions_collection].find_one({"turn_id": turn_id})
    assert doc["status"] == "interrupted"
    assert doc["tts"]["played_chunks"] == 1
    assert doc["tts"]["played_text"] == audio_events[0]["text"]
    assert doc["reply_text"].startswith(doc["tts"]["played_text"].rstrip(". "))
