"""The kombu internals tasks/ relies on, checked against a real Redis: if an upgrade changes them, this fails.

tasks/base.py keeps a running task's message leased by refreshing its score in kombu's `unacked_index`
sorted set; tasks/celery_app.py wraps `QoS.restore_unacked/ack/reject` so a lost broker connection does
not kill the worker. setup.cfg pins Celery and kombu to the range these tests passed on.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import redis
from kombu import Connection
from kombu.transport import redis as kombu_redis

from tasks import base
from tasks.celery_app import _survive_broker_loss
from tests.support import REPO
from voiceapp.config import Settings

pytestmark = pytest.mark.timeout(60)
VISIBILITY = 2


@pytest.fixture
def broker(private_redis_url):
    """A kombu connection with a short visibility timeout on a flushed Redis database of its own."""
    url = private_redis_url.rsplit("/", 1)[0] + "/7"
    client = redis.Redis.from_url(url)
    client.flushdb()
    with Connection(url, transport_options={"visibility_timeout": VISIBILITY}) as conn:
        yield conn, client
    client.flushdb()


def _unacked_message(conn: Connection):
    queue = conn.SimpleQueue("lease-probe")
    queue.put({"turn": 1})
    message = queue.get(timeout=5)  # delivered, not acknowledged: what a running acks_late task holds
    return queue, message


def test_unacked_index_is_the_sorted_set_of_delivery_times(broker):
    conn, client = broker
    assert kombu_redis.Channel.unacked_index_key == base.UNACKED_INDEX
    before = time.time()
    queue, message = _unacked_message(conn)
    score = client.zscore(base.UNACKED_INDEX, message.delivery_tag)
    assert score is not None and before - 1 <= score <= time.time() + 1
    message.ack()
    assert client.zscore(base.UNACKED_INDEX, message.delivery_tag) is None
    queue.close()


def test_a_refreshed_lease_is_not_redelivered_and_a_stale_one_is(broker):
    conn, client = broker
    queue, message = _unacked_message(conn)
    qos = queue.channel.qos
    time.sleep(VISIBILITY + 0.5)
    # What _keep_leased does every third of the timeout while the task runs (xx: never re-adds an acked tag).
    client.zadd(base.UNACKED_INDEX, {message.delivery_tag: time.time()}, xx=True)
    qos.restore_visible(num=10, interval=1)
    assert client.llen("lease-probe") == 0  # still leased: not handed out again
    time.sleep(VISIBILITY + 0.5)
    qos.restore_visible(num=10, interval=1)  # no refresh since: the worker is taken for dead
    assert client.llen("lease-probe") == 1
    assert client.zscore(base.UNACKED_INDEX, message.delivery_tag) is None
    assert client.zadd(base.UNACKED_INDEX, {message.delivery_tag: time.time()}, xx=True) == 0
    assert client.zcard(base.UNACKED_INDEX) == 0
    queue.close()


@pytest.mark.parametrize("name, args", [("restore_unacked", ()), ("ack", ("1",)), ("reject", ("1",))])
def test_the_patched_qos_methods_survive_a_lost_connection(name, args):
    _survive_broker_loss()
    method = getattr(kombu_redis.QoS, name)
    assert getattr(method, "voiceapp_safe", False)

    class DeadChannel:  # what kombu#582 leaves behind: the channel's connection is gone
        def __getattr__(self, item):
            raise AttributeError(item)

    qos = kombu_redis.QoS.__new__(kombu_redis.QoS)
    qos.channel = DeadChannel()
    qos._delivered = {}
    qos._dirty = set()
    assert method(qos, *args) is None


def test_the_default_visibility_timeout_is_short_and_renewed_three_times_per_period():
    settings = Settings.from_env({})
    assert settings.task_visibility_timeout <= 15  # a crashed worker stalls its turn seconds, not minutes
    from voiceapp.broker import _broker_options

    options = _broker_options(settings)
    assert options["visibility_timeout"] == settings.task_visibility_timeout
    assert options["unacked_restore_interval"] <= settings.task_visibility_timeout / 3


def test_the_runtime_side_builds_celery_without_importing_tasks():
    """One-way imports: voiceapp owns Celery; only the worker entry imports `tasks`."""
    code = (
        "import sys, voiceapp, voiceapp.web.api, voiceapp.stages, voiceapp.cli\n"
        "from voiceapp.config import Settings\n"
        "from voiceapp.runtime import Runtime\n"
        "app = Runtime(Settings.from_env({})).celery\n"
        "assert 'voice.stt.transcribe' not in app.tasks\n"
        "assert app.amqp.router.route({}, 'voice.tts.synthesize')['queue'].name == 'tts'\n"
        "print(sorted(m for m in sys.modules if m == 'tasks' or m.startswith('tasks.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_worker_app_includes_the_stage_tasks():
    code = (
        "from tasks.worker import celery; celery.loader.import_default_modules(); "
        "print(sorted(n for n in celery.tasks if n.startswith('voice.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO, check=False
    )
    assert out.returncode == 0, out.stderr
    stages = ["voice.stt.transcribe", "voice.stt.live", "voice.dialog.respond", "voice.tts.synthesize"]
    speculative = ["voice.dialog.prepare", "voice.tts.prepare"]  # the reply prepared at a pause (issue 15)
    assert out.stdout.strip() == str(sorted([*stages, *speculative]))
