"""One Redis pub/sub listener per API process, fanning session events out to local listeners."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict

import redis

from ..events import KEY_PREFIX, Event, EventBus

log = logging.getLogger(__name__)


class Listener:
    """Events of one session for one local consumer (a WebSocket or a long-poll), gap-free and in order."""

    def __init__(self, hub: EventHub, session_id: str, last_seq: int) -> None:
        self.session_id = session_id
        self.last_seq = last_seq
        self._hub = hub
        self._queue: queue.Queue[Event] = queue.Queue()
        self._gap_tried: int | None = None

    def _offer(self, event: Event) -> None:
        self._queue.put(event)

    def get(self, timeout: float | None = None) -> Event | None:
        """Next event after last_seq (fetching any missed ones from the replay stream), or None on timeout."""
        while True:
            try:
                event = self._queue.get(timeout=timeout)
            except queue.Empty:
                return None
            if event.seq <= self.last_seq:
                continue
            if event.seq > self.last_seq + 1 and self._gap_tried != event.seq:
                # Pub/sub is at-most-once (a Redis reconnect drops messages): fill the gap from the stream,
                # once per gap: after a Redis restart the numbering jumps and no stream holds the gap.
                try:
                    missed_events = self._hub.bus.replay(self.session_id, self.last_seq)
                except redis.RedisError as err:
                    log.debug("replay for session %s failed (%s); retrying", self.session_id, err)
                    self._queue.put(event)
                    time.sleep(0.5)  # Redis is down: do not spin
                    return None
                self._gap_tried = event.seq
                for missed in missed_events:
                    if missed.seq < event.seq:
                        self._queue.put(missed)
                self._queue.put(event)
                self._reorder()
                continue
            self.last_seq = event.seq
            return event

    def _reorder(self) -> None:
        items: list[Event] = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for item in sorted({e.seq: e for e in items}.values(), key=lambda e: e.seq):
            self._queue.put(item)

    def close(self) -> None:
        """Stop receiving events."""
        self._hub._remove(self)


class EventHub:
    """Subscribes once to every session channel and hands events to the listeners of this process."""

    def __init__(self, client: redis.Redis, bus: EventBus) -> None:
        self.bus = bus
        self._redis = client
        self._listeners: dict[str, set[Listener]] = defaultdict(set)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def listen(self, session_id: str, last_seq: int | None = None) -> Listener:
        """A listener for events with seq > last_seq (default: only new ones)."""
        self._ensure_thread()
        start = self.bus.last_seq(session_id) if last_seq is None else last_seq
        listener = Listener(self, session_id, start)
        with self._lock:
            self._listeners[session_id].add(listener)
        # Anything published between the subscription and now is replayed; duplicates are dropped by seq.
        for event in self.bus.replay(session_id, start):
            listener._offer(event)
        return listener

    def _remove(self, listener: Listener) -> None:
        with self._lock:
            group = self._listeners.get(listener.session_id)
            if group is not None:
                group.discard(listener)
                if not group:
                    del self._listeners[listener.session_id]

    @property
    def listener_count(self) -> int:
        """How many local consumers are attached."""
        with self._lock:
            return sum(len(group) for group in self._listeners.values())

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._ready.clear()
                self._thread = threading.Thread(target=self._run, name="voiceapp-event-hub", daemon=True)
                self._thread.start()
        self._ready.wait(timeout=5)

    def _run(self) -> None:
        delay = 0.0
        while True:
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(f"{KEY_PREFIX}:*")
                if delay:
                    log.warning("event hub reconnected to Redis")
                delay = 0.0
                self._ready.set()
                for message in pubsub.listen():
                    self._dispatch(message)
            except redis.RedisError as err:
                # Listeners fill any gap from the replay stream once events flow again.
                (log.warning if not delay else log.debug)("event hub lost Redis (%s); reconnecting", err)
                self._ready.set()
                delay = min(5.0, max(0.2, delay * 2))
                threading.Event().wait(delay)

    def _dispatch(self, message: dict) -> None:
        if message.get("type") != "pmessage":
            return
        try:
            event = Event.from_json(message["data"])
        except (ValueError, KeyError) as err:
            log.warning("dropping a malformed event: %s", err)
            return
        with self._lock:
            targets = list(self._listeners.get(event.session_id, ()))
        for listener in targets:
            listener._offer(event)


def get_hub(app) -> EventHub:
    """The EventHub of this API process (created on first use)."""
    hub = app.extensions.get("voiceapp_hub")
    if hub is None:
        runtime = app.extensions["voiceapp"]
        hub = app.extensions.setdefault("voiceapp_hub", EventHub(runtime.redis, runtime.events))
    return hub
