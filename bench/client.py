"""A WebSocket client that speaks like a visitor: PCM16 frames at real-time pace, events timestamped on arrival."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
import websocket

from .speech import RATE, Utterance

SERVER_MODES = {"ptt": "push_to_talk", "handsfree": "hands_free"}  # bench name -> the socket's ?mode=
REQUIRED = ("status", "transcript", "reply", "audio", "done")  # settled events of one answered turn


@dataclass
class TurnResult:
    """Client-side timestamps (time.time()) and the events of one turn."""

    utterance: str
    mode: str
    turn_id: str | None = None
    t_start: float = 0.0
    t_eos: float = 0.0
    t_partial: float | None = None
    t_final: float | None = None
    t_reply: float | None = None
    t_audio_event: float | None = None
    t_first_byte: float | None = None
    t_done: float | None = None
    status: str | None = None
    transcript: str = ""
    events: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    pubsub_s: list[float] = field(default_factory=list)
    timed_out: bool = False
    endpointed: bool | None = None  # hands-free: the server ended the utterance itself (a pause was heard)

    def since_eos(self, stamp: float | None) -> float | None:
        """Seconds from end of speech to `stamp`."""
        return None if stamp is None else round(stamp - self.t_eos, 4)

    def to_dict(self) -> dict:
        """The numbers a report keeps (no raw events)."""
        return {
            "utterance": self.utterance,
            "mode": self.mode,
            "turn_id": self.turn_id,
            "status": self.status,
            "transcript": self.transcript,
            "timed_out": self.timed_out,
            "endpointed": self.endpointed,
            "eos_to_partial_s": self.since_eos(self.t_partial),
            "eos_to_final_s": self.since_eos(self.t_final),
            "eos_to_reply_s": self.since_eos(self.t_reply),
            "eos_to_audio_event_s": self.since_eos(self.t_audio_event),
            "eos_to_first_audio_s": self.since_eos(self.t_first_byte),
            "eos_to_done_s": self.since_eos(self.t_done),
            # Hands-free: the server heard a pause inside the speech and answered its first part early.
            "split": bool(self.t_final and self.t_final < self.t_eos),
            "partials": sum(1 for e in self.events if e["type"] == "transcript" and not e.get("final")),
            "errors": [{k: e.get(k) for k in ("code", "stage", "message")} for e in self.errors],
        }


class LiveClient:
    """One visitor tab: a WebSocket to a session, a receiver thread, real-time streaming of utterances."""

    def __init__(self, base_url: str, session: dict, timeout: float = 30.0, mode: str = "ptt") -> None:
        self.base_url = base_url
        self.session = session
        ws_base = "ws" + base_url[len("http") :]
        url = f"{ws_base}/api/v1/voice/ws/{session['session_id']}?token={session['token']}&mode={SERVER_MODES[mode]}"
        self.ws = websocket.create_connection(url, timeout=timeout, enable_multithread=True)
        self.ws.settimeout(None)
        self.inbox: list[tuple[float, dict]] = []
        self._cond = threading.Condition()
        self.closed = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while True:
            try:
                raw = self.ws.recv()
            except Exception:
                break
            if not raw:
                break
            stamp = time.time()
            with self._cond:
                self.inbox.append((stamp, json.loads(raw)))
                self._cond.notify_all()
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wait(self, start: int, pred: Callable[[dict], bool], timeout: float) -> tuple[int, float, dict] | None:
        """The first message at index >= start matching pred: (index, arrival time, message), or None."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(start, len(self.inbox)):
                    if pred(self.inbox[i][1]):
                        return i, self.inbox[i][0], self.inbox[i][1]
                start = len(self.inbox)
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    return None
                self._cond.wait(left)

    def quiesce(self, timeout: float = 60.0) -> bool:
        """Wait until every utterance this socket opened has its `done`/`error` (none left in the pipeline)."""

        def settled() -> bool:
            opened = {m["turn_id"] for _, m in self.inbox if m.get("type") == "status" and m.get("seq") is not None}
            ended = {
                m["turn_id"] for _, m in self.inbox if m.get("type") in ("done", "error") and m.get("seq") is not None
            }
            return opened <= ended

        deadline = time.monotonic() + timeout
        while not settled():
            if time.monotonic() > deadline or self.closed:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        """Close the socket."""
        try:
            self.ws.close()
        except Exception:
            pass

    # ------------------------------------------------------------ streaming

    def _send_paced(
        self, pcm: bytes, frame_s: float, began: float, offset: int, on_frame: Callable[[int], bool] | None = None
    ) -> int:
        """Send `pcm` in frames on a real-time schedule starting at monotonic `began`; returns frames sent."""
        step = int(frame_s * RATE) * 2
        sent = 0
        for i in range(0, len(pcm), step):
            delay = began + (offset + sent) * frame_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.ws.send_binary(pcm[i : i + step])
            sent += 1
            if on_frame is not None and on_frame(offset + sent):
                break
        return sent

    def turn(
        self,
        utt: Utterance,
        mode: str,
        *,
        frame_s: float = 0.02,
        tail_s: float = 8.0,
        timeout: float = 120.0,
        fetch_audio: bool = True,
    ) -> TurnResult:
        """Speak `utt` (mode "ptt": send end at end of speech; "handsfree": keep streaming silence), await done."""
        result = TurnResult(utterance=utt.name, mode=mode)
        mark = len(self.inbox)
        began = time.monotonic()
        result.t_start = time.time()
        if mode == "ptt":
            self._send_paced(utt.speech_pcm(), frame_s, began, 0)
            self.ws.send(json.dumps({"type": "end"}))
            result.t_eos = time.time()
        else:
            self._handsfree(utt, frame_s, began, tail_s, mark, result)
        self._collect(result, mark, timeout, fetch_audio)
        return result

    def _handsfree(
        self, utt: Utterance, frame_s: float, began: float, tail_s: float, mark: int, result: TurnResult
    ) -> None:
        eos_frame = int(utt.speech_end_s / frame_s + 0.999)
        final = lambda m: m.get("type") == "transcript" and m.get("final") is True  # noqa: E731

        def on_frame(count: int) -> bool:
            if count == eos_frame:
                result.t_eos = time.time()
            # Past the speech, once the server has ended the utterance, the clip's own trailing silence is just
            # what the tail below would send: stop here so the reply is followed (and fetched) as it comes; a
            # widget plays it while its microphone streams on. (Streaming librispeech_right's 2.4 s of trailing
            # silence first put 2.44 s on its first audio, whenever the reply came.)
            return count >= eos_frame and self.wait(mark, final, 0) is not None

        sent = self._send_paced(utt.pcm, frame_s, began, 0, on_frame)
        if not result.t_eos:
            result.t_eos = time.time()
        silence = bytes(int(frame_s * RATE) * 2)
        frames = int(tail_s / frame_s)
        result.endpointed = False
        for k in range(frames):
            if self.wait(mark, final, 0) is not None:
                result.endpointed = True
                break
            self._send_paced(silence, frame_s, began, sent + k)
        # Silence after the pause opens a new (empty) utterance on the server: close it, as a widget would.
        self.ws.send(json.dumps({"type": "end"}))

    def _collect(self, result: TurnResult, mark: int, timeout: float, fetch_audio: bool) -> None:
        """Follow this turn's events until done/error."""
        index = mark
        deadline = time.monotonic() + timeout
        while True:
            found = self.wait(index, lambda m: True, max(0.0, deadline - time.monotonic()))
            if found is None:
                result.timed_out = True
                return
            index, stamp, msg = found
            index += 1
            if self._record(result, stamp, msg, fetch_audio):
                return

    def _record(self, result: TurnResult, stamp: float, msg: dict, fetch_audio: bool) -> bool:
        """Note one message; True when the turn is over."""
        kind = msg.get("type")
        if msg.get("seq") is None:
            if kind == "error":
                result.errors.append(msg)
            return False
        if result.turn_id is None and kind == "status" and msg.get("status") == "listening":
            result.turn_id = msg.get("turn_id")
        if msg.get("turn_id") != result.turn_id:
            return False
        result.events.append(msg)
        if msg.get("ts"):
            result.pubsub_s.append(round(stamp - float(msg["ts"]), 5))
        if kind == "transcript":
            if msg.get("final"):
                result.t_final = result.t_final or stamp
                result.transcript = msg.get("text", "")
            elif result.t_partial is None:
                result.t_partial = stamp
        elif kind == "reply":
            result.t_reply = result.t_reply or stamp
        elif kind == "audio" and result.t_audio_event is None:
            result.t_audio_event = stamp
            if fetch_audio and msg.get("audio_url"):
                result.t_first_byte = self.first_byte(msg["audio_url"])
        elif kind in ("done", "error"):
            result.t_done = stamp
            result.status = msg.get("status") or kind
            if kind == "error":
                result.errors.append(msg)
            return True
        return False

    def first_byte(self, audio_url: str) -> float | None:
        """Fetch reply audio; the time its first byte arrived."""
        with requests.get(
            f"{self.base_url}{audio_url}", params={"token": self.session["token"]}, stream=True, timeout=30
        ) as response:
            if response.status_code != 200:
                return None
            for chunk in response.iter_content(1):
                if chunk:
                    stamp = time.time()
                    for _ in response.iter_content(65536):
                        pass
                    return stamp
        return None


def check_events(events: list[dict]) -> dict[str, Any]:
    """Missing and duplicated events of one turn (seq gaps are checked per connection: turns may interleave)."""
    seqs = [e["seq"] for e in events]
    settled = [e["type"] for e in events if not (e["type"] == "transcript" and not e.get("final"))]
    answered = not events or events[-1]["type"] != "done" or events[-1].get("status") == "done"
    missing = sum(1 for k in REQUIRED if k not in settled) if answered else 0
    repeated = sum(max(0, settled.count(k) - 1) for k in ("status", "transcript", "reply", "done"))
    return {"lost": missing, "duplicated": len(seqs) - len(set(seqs)) + repeated, "in_order": seqs == sorted(seqs)}


def check_stream(inbox: list[tuple[float, dict]]) -> dict[str, int]:
    """Lost (seq gaps) and duplicated (repeated seq) session events over a whole connection."""
    seqs = [m["seq"] for _, m in inbox if m.get("seq") is not None]
    unique = sorted(set(seqs))
    gaps = sum(b - a - 1 for a, b in itertools.pairwise(unique))
    return {
        "events": len(seqs),
        "lost": gaps,
        "duplicated": len(seqs) - len(unique),
        "out_of_order": sum(1 for a, b in itertools.pairwise(seqs) if b < a),
    }
