"""A local voice speaks one sentence at a time: waiting first sentences go before other replies' later ones."""

from __future__ import annotations

import threading
import time

from voiceapp.tts.registry import get_provider
from voiceapp.tts.urgency import VoiceLock, urgent


def _queue(lock: VoiceLock, kind: bool, done: list[str], name: str, work=lambda: None) -> threading.Thread:
    """Start a thread that waits for `lock` as an urgent (or ordinary) caller and records when it got it."""

    def run() -> None:
        with urgent(kind), lock.hold():
            work()
            done.append(name)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _wait_queued(lock: VoiceLock, kind: bool, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(lock._queues[kind]) < count:
        assert time.monotonic() < deadline, "the caller never queued"
        time.sleep(0.005)


def test_an_urgent_caller_goes_before_ordinary_ones_that_waited_longer():
    lock, done = VoiceLock(), []
    with lock.hold():
        later = [_queue(lock, False, done, f"later{i}") for i in range(2)]
        _wait_queued(lock, False, 2)
        first = _queue(lock, True, done, "first")
        _wait_queued(lock, True, 1)
    for thread in [*later, first]:
        thread.join(10)
    assert done[0] == "first" and sorted(done[1:]) == ["later0", "later1"]
    assert lock.handoffs == {True: 1, False: 3}


def test_callers_of_one_kind_keep_their_order():
    lock, done = VoiceLock(), []
    with lock.hold():
        threads = []
        for name in ("a", "b", "c"):
            threads.append(_queue(lock, False, done, name))
            _wait_queued(lock, False, len(threads))
    for thread in threads:
        thread.join(10)
    assert done == ["a", "b", "c"]


def test_piper_speaks_a_waiting_first_sentence_before_a_later_one(settings):
    piper = get_provider(settings, "piper")
    spoken: list[str] = []

    def speak(text: str, first: bool) -> threading.Thread:
        def run() -> None:
            with urgent(first):
                piper.synthesize(text)
            spoken.append(text)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    with piper._lock.hold():  # another reply's sentence is being spoken
        later = speak("The rest of someone else's reply.", first=False)
        _wait_queued(piper._lock, False, 1)
        first = speak("Hello there.", first=True)
        _wait_queued(piper._lock, True, 1)
    later.join(60)
    first.join(60)
    assert spoken == ["Hello there.", "The rest of someone else's reply."]
