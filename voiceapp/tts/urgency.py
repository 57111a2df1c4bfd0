"""Which synthesis goes first when several replies wait for one local voice: first sentences before the rest.

A local voice (Piper, festival) speaks one sentence at a time. Under load, a visitor waiting for the first
words of a reply would otherwise queue behind other replies' later sentences, which nobody hears for
seconds yet (the reply's first sentence is still playing). The TTS stage marks the first sentence urgent;
the voice's lock lets urgent callers in first, in arrival order within each kind.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_URGENT: contextvars.ContextVar[bool] = contextvars.ContextVar("tts_urgent", default=False)


@contextmanager
def urgent(flag: bool = True) -> Iterator[None]:
    """Synthesis inside the block is (or, with False, is not) a reply's first sentence."""
    token = _URGENT.set(flag)
    try:
        yield
    finally:
        _URGENT.reset(token)


class VoiceLock:
    """A lock that, when released, goes to the longest-waiting urgent caller, else the longest-waiting other."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held = False
        self._queues: dict[bool, list[object]] = {True: [], False: []}
        self.handoffs = {True: 0, False: 0}  # acquisitions by kind (for measurement and tests)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the voice for one synthesis."""
        kind, ticket = _URGENT.get(), object()
        with self._cond:
            self._queues[kind].append(ticket)
            self._cond.wait_for(lambda: not self._held and self._next() is ticket)
            self._queues[kind].pop(0)
            self._held = True
            self.handoffs[kind] += 1
        try:
            yield
        finally:
            with self._cond:
                self._held = False
                self._cond.notify_all()

    def _next(self) -> object | None:
        """The caller whose turn it is."""
        for kind in (True, False):
            if self._queues[kind]:
                return self._queues[kind][0]
        return None
