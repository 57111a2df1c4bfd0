"""Stage claims on real Redis and the MongoDB-wire server: two copies of a stage run it once, and a redelivered
stage re-publishes what was recorded but never sent.

The stages are called directly (two threads = two workers holding the same task), with the paid TTS vendor
faked on 127.0.0.1 in its own HTTP wire format.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis

import migrations
from tests.fakes import elevenlabs as fake_elevenlabs
from tests.support import shared_file
from voiceapp import handover, metrics, pipeline, stages
from voiceapp.audio import decode, to_wav
from voiceapp.config import Settings
from voiceapp.dialog.answer import respond
from voiceapp.dialog.knowledge import load_demo
from voiceapp.errors import NotFound, VoiceError
from voiceapp.events import EventType
from voiceapp.runtime import Runtime
from voiceapp.storage import interactions, sessions
from voiceapp.storage.audio import UPLOADS_BUCKET, get_audio, new_audio_id, put_audio
from voiceapp.storage.mongo import get_client, get_db
from voiceapp.turns import TURN_FIELDS, TurnRef, TurnStatus

pytestmark = pytest.mark.timeout(180)

VENDOR_KEY = "sk-claims-test-0123456789abcdef"
REPLY = "Our office opens at nine. It closes at five."


@pytest.fixture(scope="module")
def claims_vendor():
    """The paid TTS vendor on 127.0.0.1."""
    state, server = fake_elevenlabs.start(VENDOR_KEY)
    yield state
    server.shutdown()


@pytest.fixture
def claims_rt(mongo_uri, private_redis_url, claims_vendor):
    """A Runtime on a fresh migrated database and a flushed Redis, speaking through the fake vendor."""
    settings = Settings.from_env(
        {},
        mongo_uri=mongo_uri,
        mongo_db=f"claims_{uuid.uuid4().hex[:10]}",
        redis_url=private_redis_url,
        tts_default_provider="elevenlabs",
        elevenlabs_api_key=VENDOR_KEY,
        elevenlabs_base_url=claims_vendor.url,
        elevenlabs_output_format="mp3_44100_128",
        tts_fallback_chain=("piper",),
        cache_audio=False,
        task_visibility_timeout=3,
    )
    migrations.migrate(get_db(settings), settings)
    rt = Runtime(settings)
    rt.redis.flushdb()
    claims_vendor.reset("ok")
    yield rt
    get_client(settings).drop_database(settings.mongo_db)


OFFICE = "When does the office open?"


def _turn(rt: Runtime, **fields) -> TurnRef:
    session = sessions.create_session(rt.db, rt.settings, "demo", "en-US", "")
    turn_id = interactions.create_turn(rt.db, rt.settings, session, None, accepted_at=time.time(), **fields)
    return TurnRef(session_id=session["session_id"], turn_id=turn_id)


def _events(rt: Runtime, ref: TurnRef, type: EventType | None = None) -> list:
    return [e for e in rt.events.replay(ref.session_id) if e.turn_id == ref.turn_id and type in (None, e.type)]


def _doc(rt: Runtime, ref: TurnRef) -> dict:
    return interactions.get_turn(rt.db, rt.settings, ref.session_id, ref.turn_id)


def _synthesis_observations() -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("voice_synthesis_duration_seconds_count", {"provider": "elevenlabs"}) or 0.0


def _twice(run, rt: Runtime, ref: TurnRef) -> list:
    """Run the same stage in two threads at once (two workers holding copies of one task)."""
    results: list = []
    errors: list = []
    start = threading.Barrier(2)

    def one() -> None:
        start.wait()
        try:
            results.append(run(rt, ref.to_payload()))
        except Exception as err:
            errors.append(err)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    return results


def test_two_copies_of_synthesis_call_the_paid_vendor_once(claims_rt, claims_vendor):
    rt = claims_rt
    claims_vendor.reset("slow", delay=0.5)  # long enough for the second copy to arrive mid-stage
    ref = _turn(rt, status=TurnStatus.ANSWERED.value, reply_text=REPLY)
    counted = metrics.INTERACTIONS._value.get()
    observed = _synthesis_observations()
    results = _twice(stages.run_tts, rt, ref)
    assert len(claims_vendor.requests) == 2  # two sentences, spoken once
    costs = list(rt.db[rt.settings.analytics_collection].find({"kind": "tts_cost", "session_id": ref.session_id}))
    assert len(costs) == 1 and costs[0]["requests"] == 1 and costs[0]["characters"] == len(REPLY) - 1
    assert metrics.INTERACTIONS._value.get() == counted + 1
    assert _synthesis_observations() == observed + 1  # once per reply, not per sentence
    audio = _events(rt, ref, EventType.AUDIO)
    assert sorted(e.data["index"] for e in audio) == [0, 1]
    assert len(_events(rt, ref, EventType.DONE)) == 1
    doc = _doc(rt, ref)
    assert doc["status"] == TurnStatus.DONE and doc["tts"]["provider"] == "elevenlabs"
    assert set(doc) <= TURN_FIELDS  # the typed record names every field the stages write
    assert all(not r.skip for r in results)


def test_two_copies_of_recognition_record_and_publish_one_transcript(claims_rt):
    rt = claims_rt
    audio = decode(shared_file("jfk.flac").read_bytes(), rt.settings)
    upload = put_audio(
        rt.db,
        to_wav(audio.samples, audio.sample_rate),
        bucket=UPLOADS_BUCKET,
        filename="u.wav",
        content_type="audio/wav",
    )
    session = sessions.create_session(rt.db, rt.settings, "demo", "en-US", "")
    turn_id = interactions.create_turn(rt.db, rt.settings, session, upload, accepted_at=time.time())
    ref = TurnRef(session_id=session["session_id"], turn_id=turn_id)
    _twice(stages.run_stt, rt, ref)
    transcripts = _events(rt, ref, EventType.TRANSCRIPT)
    assert len(transcripts) == 1 and "country" in transcripts[0].data["text"].lower()
    doc = _doc(rt, ref)
    assert doc["status"] == TurnStatus.RECOGNIZED and doc["transcript"] == transcripts[0].data["text"]
    assert set(doc) <= TURN_FIELDS


def test_two_copies_of_dialog_publish_one_reply(claims_rt):
    rt = claims_rt
    ref = _turn(rt, status=TurnStatus.RECOGNIZED.value, transcript="When does the office open?")
    _twice(stages.run_dialog, rt, ref)
    replies = _events(rt, ref, EventType.REPLY)
    assert len(replies) == 1
    doc = _doc(rt, ref)
    assert doc["status"] == TurnStatus.ANSWERED and doc["reply_text"] == replies[0].data["text"]
    assert set(doc) <= TURN_FIELDS


def _cost_requests(rt: Runtime) -> int:
    return sum(d["requests"] for d in rt.db[rt.settings.analytics_collection].find({"kind": "tts_cost"}))


class _CrashOnce:
    """The event bus of a worker that dies right after recording a result, before publishing it."""

    def __init__(self, bus, type: EventType) -> None:
        self.bus, self.type, self.crashed = bus, type, False

    def publish(self, session_id, type, turn_id=None, **data):
        if type == self.type and not self.crashed:
            self.crashed = True
            raise redis.ConnectionError("worker died before publishing")
        return self.bus.publish(session_id, type, turn_id, **data)


@pytest.mark.parametrize(
    "run, status, crash_on",
    [
        (stages.run_dialog, TurnStatus.RECOGNIZED, EventType.REPLY),
        (stages.run_tts, TurnStatus.ANSWERED, EventType.DONE),
    ],
)
def test_a_result_recorded_but_not_published_is_published_on_redelivery(claims_rt, run, status, crash_on):
    rt = claims_rt
    fields = {"transcript": "When does the office open?"} if status == TurnStatus.RECOGNIZED else {"reply_text": REPLY}
    ref = _turn(rt, status=status.value, **fields)
    crashing = Runtime(rt.settings)
    crashing.__dict__["events"] = _CrashOnce(rt.events, crash_on)
    with pytest.raises(redis.ConnectionError):
        run(crashing, ref.to_payload())
    assert not _events(rt, ref, crash_on)  # recorded in MongoDB, never sent
    cost_requests = _cost_requests(rt)
    run(rt, ref.to_payload())  # the redelivered task
    assert len(_events(rt, ref, crash_on)) == 1
    assert _cost_requests(rt) == cost_requests  # nothing spoken or billed again
    if crash_on == EventType.DONE:
        assert sorted(e.data["index"] for e in _events(rt, ref, EventType.AUDIO)) == [0, 1]


def test_a_stage_claimed_by_a_dead_worker_is_taken_over_when_its_lease_runs_out(claims_rt, claims_vendor):
    rt = claims_rt
    ref = _turn(rt, status=TurnStatus.ANSWERED.value, reply_text=REPLY)
    lease = rt.settings.task_visibility_timeout
    dead = interactions.claim_turn(
        rt.db, rt.settings, ref.turn_id, TurnStatus.ANSWERED, TurnStatus.TTS_RUNNING, "dead-worker", lease
    )
    assert dead is not None and dead["status"] == TurnStatus.TTS_RUNNING
    started = time.monotonic()
    stages.run_tts(rt, ref.to_payload())  # the redelivered copy: waits out the dead claim's lease, then runs
    assert time.monotonic() - started >= lease - 0.5
    assert _doc(rt, ref)["status"] == TurnStatus.DONE and len(claims_vendor.requests) == 2
    assert len(_events(rt, ref, EventType.DONE)) == 1


def test_a_recognised_live_turn_is_handed_on_once(claims_rt):
    rt = claims_rt
    ref = _turn(rt, status=TurnStatus.RECOGNIZED.value, transcript="hello", source="ws-live")

    def queued():
        return rt.redis.llen("dialog")  # (kombu's Redis transport: one list per queue)

    # The first live task, then its redelivered copy (and one that lost a DuplicateKeyError race).
    assert stages.run_live_stt(rt, ref.to_payload()) == ref
    assert pipeline.continue_turn(rt, ref) is True
    assert pipeline.continue_turn(rt, ref) is False
    assert stages.run_live_stt(rt, ref.to_payload()) == ref
    assert pipeline.continue_turn(rt, ref) is False
    assert queued() == 1
    assert len(_events(rt, ref, EventType.TRANSCRIPT)) == 1  # the recorded transcript, re-published once


def _uploaded_turn(rt: Runtime) -> tuple[TurnRef, str, bytes]:
    """A queued turn naming an upload id that nothing has stored yet, and the WAV (jfk) it stands for."""
    audio = decode(shared_file("jfk.flac").read_bytes(), rt.settings)
    upload_id = new_audio_id()
    session = sessions.create_session(rt.db, rt.settings, "demo", "en-US", "")
    turn_id = interactions.create_turn(rt.db, rt.settings, session, upload_id, accepted_at=time.time())
    return (
        TurnRef(session_id=session["session_id"], turn_id=turn_id),
        upload_id,
        to_wav(audio.samples, audio.sample_rate),
    )


def test_recognition_waits_for_an_upload_stored_after_its_turn_was_enqueued(claims_rt):
    """start_turn enqueues before storing the audio: the stage finds it once the API has written it."""
    rt = claims_rt
    ref, upload_id, wav = _uploaded_turn(rt)
    worker = threading.Thread(target=stages.run_stt, args=(rt, ref.to_payload()))
    worker.start()
    time.sleep(0.3)  # the stage has claimed the turn and is waiting for its audio
    assert _doc(rt, ref)["status"] == TurnStatus.STT_RUNNING
    put_audio(rt.db, wav, bucket=UPLOADS_BUCKET, filename="u.wav", content_type="audio/wav", audio_id=upload_id)
    worker.join(60)
    assert _doc(rt, ref)["status"] == TurnStatus.RECOGNIZED
    assert "country" in _events(rt, ref, EventType.TRANSCRIPT)[0].data["text"].lower()


def test_recognition_reads_the_upload_handed_over_through_redis_before_its_gridfs_record(claims_rt):
    """start_turn puts the WAV in Redis before it enqueues: the stage needs no GridFS copy, and takes it once."""
    rt = claims_rt
    ref, upload_id, wav = _uploaded_turn(rt)
    assert handover.hand_over(rt.redis, upload_id, wav)
    stages.run_stt(rt, ref.to_payload())  # nothing in GridFS: it would wait UPLOAD_WAIT_S, then fail the turn
    assert _doc(rt, ref)["status"] == TurnStatus.RECOGNIZED
    assert "country" in _events(rt, ref, EventType.TRANSCRIPT)[0].data["text"].lower()
    assert handover.take(rt.redis, upload_id) is None  # read once: a retry goes to the GridFS record


def test_with_retention_zero_a_recording_stored_after_its_recognition_is_still_deleted(claims_rt):
    """Recognition may finish from the hand-over before the API's GridFS store lands: it waits for it to delete it."""
    rt = Runtime(claims_rt.settings.replace(recording_retention="0"))
    ref, upload_id, wav = _uploaded_turn(rt)
    handover.hand_over(rt.redis, upload_id, wav)
    worker = threading.Thread(target=stages.run_stt, args=(rt, ref.to_payload()))
    worker.start()
    deadline = time.monotonic() + 60
    while not _events(rt, ref, EventType.TRANSCRIPT) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _doc(rt, ref)["status"] == TurnStatus.RECOGNIZED  # recognised before the recording was stored
    put_audio(rt.db, wav, bucket=UPLOADS_BUCKET, filename="u.wav", content_type="audio/wav", audio_id=upload_id)
    worker.join(30)
    with pytest.raises(NotFound):
        get_audio(rt.db, upload_id, bucket=UPLOADS_BUCKET)


def test_an_upload_that_never_arrives_fails_the_turn_clearly(claims_rt, monkeypatch):
    rt = claims_rt
    monkeypatch.setattr(stages, "UPLOAD_WAIT_S", 0.5)
    ref = _turn(rt, status=TurnStatus.QUEUED.value)
    interactions.update_turn(rt.db, rt.settings, ref.turn_id, upload_id=new_audio_id())
    with pytest.raises(VoiceError):
        stages.run_stt(rt, ref.to_payload())
    errors = _events(rt, ref, EventType.ERROR)
    assert len(errors) == 1 and errors[0].data["code"] == "audio_not_found" and errors[0].data["stage"] == "stt"
    assert _doc(rt, ref)["status"] == TurnStatus.ERROR


# ---------------------------------------------------------------- stages started while their claim is made


def _local_voice(rt: Runtime) -> Runtime:
    """The same stores, speaking with the free local voice (its synthesis may start before the claim)."""
    return Runtime(rt.settings.replace(tts_default_provider="piper"))


def _answered(rt: Runtime) -> TurnRef:
    """A recognised turn answered by the dialog stage: the ref it hands to synthesis."""
    ref = _turn(rt, status=TurnStatus.RECOGNIZED.value, transcript="When does the office open?")
    return stages.run_dialog(rt, ref.to_payload())


def test_dialog_hands_synthesis_the_reply_only_for_a_free_voice(claims_rt):
    paid = _answered(claims_rt)  # the fake ElevenLabs: never paid for before the turn is held
    assert paid.inputs is None
    free = _answered(_local_voice(claims_rt))
    assert free.inputs is not None and free.inputs["text"] == _doc(claims_rt, free)["reply_text"]
    assert free.inputs["project"] == "demo" and free.inputs["language"] == "en-US"


def test_two_copies_of_synthesis_carrying_the_reply_publish_it_once(claims_rt):
    rt = _local_voice(claims_rt)
    ref = _answered(rt)
    assert ref.inputs is not None
    _twice(stages.run_tts, rt, ref)
    audio = _events(rt, ref, EventType.AUDIO)
    chunks = _doc(rt, ref)["tts"]["chunks"]
    assert sorted(e.data["index"] for e in audio) == list(range(chunks))  # each chunk once, in one copy's words
    assert len(_events(rt, ref, EventType.DONE)) == 1
    assert _doc(rt, ref)["status"] == TurnStatus.DONE


def test_a_reply_synthesized_before_its_claim_is_never_sent_for_an_interrupted_turn(claims_rt):
    rt = _local_voice(claims_rt)
    ref = _answered(rt)
    assert ref.inputs is not None  # synthesis starts on the reply the payload carries
    interactions.update_turn(rt.db, rt.settings, ref.turn_id, status=TurnStatus.INTERRUPTED.value)
    result = stages.run_tts(rt, ref.to_payload())
    assert result.skip
    assert not _events(rt, ref, EventType.AUDIO)
    assert [e.data["status"] for e in _events(rt, ref, EventType.DONE)] == ["interrupted"]  # the recorded outcome
    assert _doc(rt, ref)["status"] == TurnStatus.INTERRUPTED and "tts" not in _doc(rt, ref)


def test_two_copies_of_recognition_named_in_the_payload_record_one_transcript(claims_rt):
    rt = claims_rt
    ref, upload_id, wav = _uploaded_turn(rt)
    handover.hand_over(rt.redis, upload_id, wav)
    put_audio(rt.db, wav, bucket=UPLOADS_BUCKET, filename="u.wav", content_type="audio/wav", audio_id=upload_id)
    named = TurnRef(ref.session_id, ref.turn_id, inputs={"upload_id": upload_id, "language": "en-US"})
    results = _twice(stages.run_stt, rt, named)
    transcripts = _events(rt, ref, EventType.TRANSCRIPT)
    assert len(transcripts) == 1 and "country" in transcripts[0].data["text"].lower()
    assert _doc(rt, ref)["status"] == TurnStatus.RECOGNIZED
    assert all(r.inputs is None and not r.skip for r in results)  # dialog gets ids only


def _recognised(rt: Runtime) -> TurnRef:
    """An uploaded turn (jfk) through the recognition stage, the ref it hands on."""
    ref, upload_id, wav = _uploaded_turn(rt)
    handover.hand_over(rt.redis, upload_id, wav)
    named = TurnRef(ref.session_id, ref.turn_id, inputs={"upload_id": upload_id, "language": "en-US"})
    return stages.run_stt(rt, named.to_payload())


def test_recognition_hands_dialog_the_question_through_redis_not_the_payload(claims_rt):
    ref = _recognised(claims_rt)
    assert ref.inputs is None  # Flower shows payloads: the visitor's words stay out of them
    assert handover.take_question(claims_rt.redis, ref.turn_id) == ("demo", _doc(claims_rt, ref)["transcript"])


def test_with_an_llm_the_question_waits_for_the_claim(claims_rt):
    ref = _recognised(Runtime(claims_rt.settings.replace(dialog_backend="llm")))
    assert _doc(claims_rt, ref)["status"] == TurnStatus.RECOGNIZED
    assert handover.take_question(claims_rt.redis, ref.turn_id) is None  # a paid call only for a held turn


def _asked(rt: Runtime, status: TurnStatus, handed: str, recorded: str = OFFICE) -> TurnRef:
    ref = _turn(rt, status=status.value, transcript=recorded)
    assert handover.hand_over_question(rt.redis, ref.turn_id, "demo", handed)
    return ref


def test_two_copies_of_dialog_answering_a_handed_question_publish_one_reply(claims_rt):
    ref = _asked(claims_rt, TurnStatus.RECOGNIZED, OFFICE)
    _twice(stages.run_dialog, claims_rt, ref)
    assert len(_events(claims_rt, ref, EventType.REPLY)) == 1
    assert _doc(claims_rt, ref)["status"] == TurnStatus.ANSWERED


def test_a_handed_question_of_a_turn_past_dialog_is_never_answered(claims_rt):
    ref = _asked(claims_rt, TurnStatus.INTERRUPTED, OFFICE)
    assert stages.run_dialog(claims_rt, ref.to_payload()).skip
    assert not _events(claims_rt, ref, EventType.REPLY) and "reply_text" not in _doc(claims_rt, ref)


def test_the_recorded_question_is_answered_when_a_handed_one_differs(claims_rt):
    rt, saturday = claims_rt, "What time do you open on Saturday?"
    load_demo(rt.db, rt.settings, "demo")
    ref = _asked(rt, TurnStatus.RECOGNIZED, handed="Do you sell cars?", recorded=saturday)
    stages.run_dialog(rt, ref.to_payload())
    recorded, stale = (respond(rt.db, rt.settings, "demo", q, []).text for q in (saturday, "Do you sell cars?"))
    assert recorded != stale and _doc(rt, ref)["reply_text"] == recorded


def test_recognition_claims_a_turn_recorded_after_its_task_was_enqueued(claims_rt):
    """start_turn enqueues before it records the turn: recognition waits for the record, then claims it."""
    rt = claims_rt
    audio = decode(shared_file("jfk.flac").read_bytes(), rt.settings)
    wav, upload_id, turn_id = to_wav(audio.samples, audio.sample_rate), new_audio_id(), interactions.new_turn_id()
    session = sessions.create_session(rt.db, rt.settings, "demo", "en-US", "")
    handover.hand_over(rt.redis, upload_id, wav)
    named = TurnRef(session["session_id"], turn_id, inputs={"upload_id": upload_id, "language": "en-US"})
    worker = threading.Thread(target=stages.run_stt, args=(rt, named.to_payload()))
    worker.start()
    time.sleep(0.3)  # the stage has recognised the upload and is waiting for the turn to claim
    assert not _events(rt, named, EventType.TRANSCRIPT)
    interactions.create_turn(rt.db, rt.settings, session, upload_id, turn_id=turn_id, accepted_at=time.time())
    worker.join(60)
    assert _doc(rt, named)["status"] == TurnStatus.RECOGNIZED
    assert "country" in _events(rt, named, EventType.TRANSCRIPT)[0].data["text"].lower()


def test_every_event_of_a_new_turn_names_a_turn_already_recorded(claims_rt):
    """A client that fetches the turn an event names must find it: start_turn announces only a recorded turn."""
    rt = claims_rt
    session = sessions.create_session(rt.db, rt.settings, "demo", "en-US", "")
    publish, seen = rt.events.publish, []

    def publish_checked(session_id, type, turn_id=None, **data):
        try:
            interactions.get_turn(rt.db, rt.settings, session_id, turn_id)
            seen.append((data.get("status"), "recorded"))
        except NotFound:
            seen.append((data.get("status"), "not recorded"))
        return publish(session_id, type, turn_id, **data)

    rt.events.publish = publish_checked  # a spy on this Runtime only: each publish looks for the turn first
    pipeline.start_turn(rt, session, decode(shared_file("jfk.flac").read_bytes(), rt.settings))
    assert seen == [("thinking", "recorded")]
