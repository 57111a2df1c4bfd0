"""Flower against a real stack (the `ops_stack` fixture, tests/ops.py): after a turn, its HTTP API shows the three
stage tasks by name, with ids only.
"""

from __future__ import annotations

import ast
import re
import time

import redis
import requests

import devstack as stack

STAGE_TASKS = {"voice.stt.transcribe": "stt", "voice.dialog.respond": "dialog", "voice.tts.synthesize": "tts"}


def _flower_tasks(ops_stack, turn_id: str, timeout: float = 30) -> list[dict]:
    """Flower's tasks of one turn (its events arrive a moment after the turn ends)."""
    deadline = time.monotonic() + timeout
    while True:
        tasks = requests.get(
            f"{ops_stack.flower_url}/api/tasks", params={"limit": 200}, auth=ops_stack.flower_auth, timeout=10
        ).json()
        mine = [t for t in tasks.values() if turn_id in (t.get("args") or "")]
        if (len(mine) >= 3 and all(t.get("state") == "SUCCESS" for t in mine)) or time.monotonic() > deadline:
            return mine
        time.sleep(0.5)


def test_flower_lists_the_three_stage_tasks_of_a_turn_by_name_and_queue(ops_stack, ops_turn):
    tasks = _flower_tasks(ops_stack, ops_turn["turn_id"])

    assert sorted(t["name"] for t in tasks) == sorted(STAGE_TASKS)
    for task in tasks:
        assert task["state"] == "SUCCESS", task
        assert task["routing_key"] == STAGE_TASKS[task["name"]]
        assert task["worker"].startswith(STAGE_TASKS[task["name"]] + "@")
    by_name = {t["name"]: t for t in tasks}
    # One chain: dialog's parent is recognition, synthesis's parent is dialog.
    assert by_name["voice.dialog.respond"]["parent"] == by_name["voice.stt.transcribe"]["uuid"]
    assert by_name["voice.tts.synthesize"]["parent"] == by_name["voice.dialog.respond"]["uuid"]


# What each stage may find in its payload besides the ids: the upload's id for recognition, the reply for synthesis.
STAGE_INPUTS = {
    "voice.stt.transcribe": {"upload_id", "language"},
    "voice.dialog.respond": set(),
    "voice.tts.synthesize": {"text", "voice", "language", "provider", "project"},
}


def test_flower_task_arguments_are_ids_never_audio_or_secrets(ops_stack, ops_turn):
    tasks = _flower_tasks(ops_stack, ops_turn["turn_id"])
    assert len(tasks) == 3
    sid, tid = ops_turn["session"]["session_id"], ops_turn["turn_id"]
    transcript = ops_turn["result"]["transcript"]

    for task in tasks:
        (ref,) = ast.literal_eval(task["args"])
        assert ref["session_id"] == sid and ref["turn_id"] == tid
        assert set(ref) <= {"session_id", "turn_id", "skip", "inputs"}, ref
        assert set(ref.get("inputs") or {}) <= STAGE_INPUTS[task["name"]], ref
        assert transcript and transcript not in f"{task['args']} {task['result']}"  # the visitor's words stay out
        assert ast.literal_eval(task["kwargs"]) == {}
        shown = f"{task['args']} {task['kwargs']} {task['result']}"
        assert len(shown) < 1000
        assert "RIFF" not in shown and "fLaC" not in shown
        assert not re.search(r"(?<!\w)b['\"]", shown), "bytes in task arguments or result"
        assert ops_stack.settings.secret_key not in shown
        assert ops_turn["session"]["token"] not in shown


def test_flower_reports_every_queue_has_a_live_worker(ops_stack, ops_turn):
    workers = requests.get(
        f"{ops_stack.flower_url}/api/workers", params={"refresh": "true"}, auth=ops_stack.flower_auth, timeout=30
    ).json()

    consumed = {q["name"] for info in workers.values() for q in info.get("active_queues", [])}
    assert {"stt", "dialog", "tts"} <= consumed, workers.keys()


def test_flower_api_needs_its_password_and_metrics_do_not(ops_stack):
    """Issue 16: Flower from `voiceapp up --flower` accepted POST /api/task/async-apply without auth."""
    url = f"{ops_stack.flower_url}/api/task/async-apply/voice.dialog.respond"
    assert requests.post(url, json={"args": []}, timeout=10).status_code == 401
    assert requests.get(f"{ops_stack.flower_url}/api/workers", timeout=10).status_code == 401
    assert (
        requests.get(f"{ops_stack.flower_url}/api/workers", auth=("voiceapp", "wrong"), timeout=10).status_code == 401
    )
    assert (
        requests.get(f"{ops_stack.flower_url}/api/workers", auth=ops_stack.flower_auth, timeout=30).status_code == 200
    )
    assert requests.get(f"{ops_stack.flower_url}/metrics", timeout=10).status_code == 200
    password = stack.run_dir(ops_stack.settings) / "flower_password"
    assert password.stat().st_mode & 0o077 == 0


def test_a_finished_turn_leaves_no_task_results_in_redis(ops_stack, ops_turn):
    """Stage results are not stored (the turn document is the record); Flower still shows each task's state."""
    client = redis.Redis.from_url(ops_stack.settings.redis_url)
    assert list(client.scan_iter("celery-task-meta-*")) == []
    assert {t["state"] for t in _flower_tasks(ops_stack, ops_turn["turn_id"])} == {"SUCCESS"}
