"""Publishing a reply's chunks on one thread, in order, while the next sentence is synthesized."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voiceapp.tts.service import ChunkResult


class Publisher:
    """Hands chunks to `on_chunk` on one thread, in order, so the next sentence is synthesized meanwhile."""

    def __init__(self, on_chunk: Callable[[ChunkResult], None]) -> None:
        self._on_chunk = on_chunk
        self._queue: queue.Queue[tuple[ChunkResult, Callable[[], object]] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._put = self._handled = 0
        self._progress = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="tts-publish", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:  # after a failure, later chunks are dropped, never published out of turn
                chunk, store = item
                try:
                    store()  # the audio exists before any event names it
                    self._on_chunk(chunk)
                except BaseException as err:  # noqa: BLE001 - re-raised in the synthesizing thread
                    self._error = err
            with self._progress:
                self._handled += 1
                self._progress.notify_all()

    def put(self, chunk: ChunkResult, store: Callable[[], object]) -> None:
        """Store `chunk`'s audio (`store`), then publish it, after the ones before it."""
        self._put += 1
        self._queue.put((chunk, store))

    def check(self, in_flight: int = 0) -> None:
        """Wait until at most `in_flight` chunks are unpublished; re-raise what `on_chunk` raised (stops the rest).

        One in flight overlaps a sentence's store and publication with the next one's synthesis; waiting for the
        one before means a barge-in stops the reply before a further sentence is paid for.
        """
        with self._progress:
            self._progress.wait_for(lambda: self._put - self._handled <= in_flight or self._error is not None)
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Wait until every chunk is published; re-raise a failure."""
        self._queue.put(None)
        self._thread.join()
        self.check()

    def abandon(self) -> None:
        """Stop the thread after what is queued (no-op once closed)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
