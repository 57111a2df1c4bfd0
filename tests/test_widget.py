"""The voice widget in real headless Chromium, its fake microphone fed from a WAV file, against the live stack."""

from __future__ import annotations

import json
import shutil
import subprocess
import wave
from pathlib import Path

import pytest
import requests

from tests.support import REPO, word_error_rate

pytestmark = pytest.mark.usefixtures("demo_kb")

WIDGET = REPO / "widget" / "voice"
BUNDLE = WIDGET / "dist" / "voice-widget.js"
QUESTION = REPO / "voiceapp" / "demo" / "question.wav"
QUESTION_TEXT = "What time do you open on Saturday?"
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]
TURN_TIMEOUT_MS = 90_000
# Collects what the widget reports (its documented CustomEvents) so tests can assert on the sequence.
RECORDER = """
window.__vw = {states: [], playback: [], events: [], spoken: [], spokenLang: []};
// speechSynthesis is recorded (headless Chromium has no voices to hear it with) and ends at once.
speechSynthesis.speak = (u) => {
  window.__vw.spoken.push(u.text);
  window.__vw.spokenLang.push(u.lang);
  setTimeout(() => u.onend && u.onend(), 50);
};
for (const name of ['state', 'playback', 'transcript', 'reply', 'interrupt', 'error', 'connection', 'fallback']) {
  document.addEventListener('voicewidget:' + name, (e) => {
    window.__vw.events.push([name, e.detail]);
    if (name === 'state') window.__vw.states.push(e.detail.state);
    if (name === 'playback') window.__vw.playback.push(e.detail);
  });
}
"""


@pytest.fixture(scope="module")
def bundle() -> Path:
    """The widget built from its sources (the Makefile's `widget` target does `npm ci` first)."""
    npm = shutil.which("npm")
    if npm and (WIDGET / "node_modules").is_dir():
        subprocess.run([npm, "run", "build"], cwd=WIDGET, check=True, capture_output=True, timeout=120)
    assert BUNDLE.is_file(), "widget not built: cd widget/voice && npm ci && npm run build"
    return BUNDLE


def _padded(path: Path, before: float, after: float) -> Path:
    with wave.open(str(QUESTION), "rb") as src:
        params, frames = src.getparams(), src.readframes(src.getnframes())
    silence = b"\x00\x00" * params.nchannels
    with wave.open(str(path), "wb") as dst:
        dst.setparams(params)
        dst.writeframes(silence * int(params.framerate * before) + frames + silence * int(params.framerate * after))
    return path


@pytest.fixture(scope="module")
def playwright():
    """Playwright driving Debian's Chromium (never a browser it downloads itself)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (in the dev extra)")
    assert Path(CHROMIUM).exists(), "apt-get install chromium"
    with sync_api.sync_playwright() as driver:
        yield driver


def _launch(playwright, fake_mic: Path):
    return playwright.chromium.launch(
        executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={fake_mic}"]
    )


@pytest.fixture(scope="module")
def browser(playwright, tmp_path_factory):
    """Chromium whose microphone says the question once, then 30 s of silence (Chromium loops the file)."""
    chromium = _launch(playwright, _padded(tmp_path_factory.mktemp("mic") / "question-once.wav", 0.5, 30))
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def chatty_browser(playwright, tmp_path_factory):
    """Chromium whose microphone repeats the question every ~3 s: the user talks over the reply."""
    chromium = _launch(playwright, _padded(tmp_path_factory.mktemp("mic") / "question-loop.wav", 0.0, 0.9))
    yield chromium
    chromium.close()


class Page:
    """One browser page on the demo, recording the widget's events and its WebSocket traffic."""

    def __init__(self, browser, live, mode: str, lang: str = "en") -> None:
        self.context = browser.new_context(viewport={"width": 1000, "height": 700})
        self.page = self.context.new_page()
        self.sockets: list[str] = []
        self.binary_sizes: list[int] = []
        self.controls: list[dict] = []
        self.page.add_init_script(RECORDER)
        self.page.on("websocket", self._socket)
        self.page.goto(f"{live.base_url}/widget/voice/demo?project=demo&mode={mode}&lang={lang}")
        self.button = self.page.locator("voiceapp-widget .vw-mic")
        self.button.wait_for()

    def _socket(self, ws) -> None:
        self.sockets.append(ws.url)
        ws.on("framesent", self._sent)

    def _sent(self, payload) -> None:
        if isinstance(payload, (bytes, bytearray)):
            self.binary_sizes.append(len(payload))
        else:
            self.controls.append(json.loads(payload))

    def state(self) -> str:
        return self.page.locator("voiceapp-widget").get_attribute("data-state")

    def wait_for(self, js: str, arg=None, timeout: int = TURN_TIMEOUT_MS) -> None:
        """Wait for a condition on the page; on timeout, fail with what the widget did meanwhile."""
        try:
            self.page.wait_for_function(js, arg=arg, timeout=timeout)
        except Exception as err:
            pytest.fail(
                f"{err}\nwidget events: {json.dumps(self.recorded()['events'])[:4000]}\nsent: {self.controls}",
                pytrace=False,
            )

    def wait_state(self, state: str, timeout: int = TURN_TIMEOUT_MS) -> None:
        self.wait_for("s => window.__vw.states.includes(s)", state, timeout)

    def wait_reply(self) -> str:
        reply = self.page.locator("voiceapp-widget .vw-reply")
        reply.wait_for(state="visible", timeout=TURN_TIMEOUT_MS)
        return reply.inner_text()

    def recorded(self) -> dict:
        return self.page.evaluate("window.__vw")

    def control_types(self) -> list[str]:
        return [c.get("type") for c in self.controls]

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path))
        return path

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def open_page(browser, live, bundle):
    pages: list[Page] = []

    def _open(mode: str, chromium=None, lang: str = "en") -> Page:
        pages.append(Page(chromium or browser, live, mode, lang))
        return pages[-1]

    yield _open
    for page in pages:
        page.close()


def test_bundle_and_demo_page_are_served(live, bundle):
    js = requests.get(f"{live.base_url}/widget/voice/dist/voice-widget.js", timeout=10)
    assert js.status_code == 200
    assert js.headers["Content-Type"].startswith("text/javascript")
    assert js.content == bundle.read_bytes()
    demo = requests.get(f"{live.base_url}/widget/voice/demo", params={"mode": "hands-free"}, timeout=10)
    assert demo.status_code == 200 and demo.headers["Content-Type"].startswith("text/html")
    assert '<script src="/widget/voice/dist/voice-widget.js" data-project="demo"' in demo.text
    assert 'data-mode="hands-free"' in demo.text
    bad = requests.get(f"{live.base_url}/widget/voice/demo", params={"project": "<script>"}, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_field"


def test_hands_free_question_is_answered_on_the_page_and_spoken(open_page):
    page = open_page("hands-free")
    assert page.button.get_attribute("aria-label") == "Start hands-free conversation"
    page.button.click()
    reply = page.wait_reply()
    assert "8:00" in reply or "8 am" in reply.lower(), reply
    transcript = page.page.locator("voiceapp-widget .vw-you .vw-final").inner_text()
    assert word_error_rate(QUESTION_TEXT, transcript) <= 0.25, transcript
    page.wait_for("window.__vw.playback.length > 0")
    recorded = page.recorded()
    assert recorded["playback"][0]["how"] == "audio", recorded["playback"]  # the server's audio, not a fallback
    assert page.state() in ("speaking", "listening")
    page.screenshot("widget-hands-free.png")
    # Microphone audio went out as 16 kHz PCM16 in 20 ms frames, and the client's endpointing ended it.
    assert page.binary_sizes and set(page.binary_sizes) == {640}, set(page.binary_sizes)
    assert page.control_types().count("end") == 1
    states = recorded["states"]
    assert states[:4] == ["listening", "thinking", "speaking", "listening"] or states[:3] == [
        "listening",
        "thinking",
        "speaking",
    ], states
    assert not [e for e in recorded["events"] if e[0] == "fallback"]


def test_push_to_talk_with_the_keyboard_and_barge_in(open_page):
    page = open_page("push-to-talk")
    page.button.focus()
    page.page.keyboard.down("Space")
    page.wait_state("listening")
    assert page.button.get_attribute("aria-label") == "Listening: release to send"
    assert page.button.get_attribute("aria-pressed") == "true"
    page.page.wait_for_timeout(3500)  # the fake microphone says the question (0.5 s silence + ~2 s speech)
    page.page.keyboard.up("Space")
    page.wait_state("thinking")
    assert page.control_types() == ["end"]
    page.wait_state("speaking")
    assert page.button.get_attribute("aria-label") == "Speaking: press to interrupt"
    assert "8:00" in page.wait_reply()
    page.screenshot("widget-push-to-talk.png")
    # Barge-in: pressing while the reply plays stops it and tells the server, naming the turn.
    page.page.keyboard.down("Space")
    page.wait_for("window.__vw.events.some(e => e[0] === 'interrupt')", timeout=10_000)
    interrupt = [c for c in page.controls if c.get("type") == "interrupt"]
    assert len(interrupt) == 1 and interrupt[0]["turn_id"], page.controls
    assert page.state() == "listening"
    page.page.keyboard.press("Escape")
    page.page.keyboard.up("Space")
    assert page.state() == "idle"


def test_a_dropped_socket_reconnects_with_last_seq_and_the_answer_still_arrives(open_page):
    page = open_page("push-to-talk")
    page.button.focus()
    page.page.keyboard.down("Space")
    page.wait_state("listening")
    page.page.wait_for_timeout(3500)
    page.page.keyboard.up("Space")
    # Drop the connection as soon as the question is sent: the turn's events happen while we are away.
    page.page.evaluate("VoiceWidget.instance.connection.socket.close()")
    reply = page.wait_reply()
    assert "8:00" in reply, reply
    page.wait_state("speaking")
    assert len(page.sockets) >= 2, page.sockets
    assert "last_seq=" not in page.sockets[0]
    assert any("last_seq=" in url for url in page.sockets[1:]), page.sockets
    statuses = [e[1]["status"] for e in page.recorded()["events"] if e[0] == "connection"]
    assert "reconnecting" in statuses and statuses[-1] == "open", statuses


def test_reply_audio_that_fails_is_spoken_by_the_browser(open_page):
    page = open_page("hands-free")
    page.page.route("**/api/v1/voice/sessions/*/audio/*", lambda route: route.fulfill(status=503, body="down"))
    page.button.click()
    reply = page.wait_reply()
    page.wait_for("window.__vw.spoken.length > 0")
    recorded = page.recorded()
    assert recorded["spoken"][0].strip() in reply  # the failed sentence, read by speechSynthesis instead
    assert [p["how"] for p in recorded["playback"]][:1] == ["speech"]
    assert [e for e in recorded["events"] if e[0] == "fallback"]


def test_talking_over_the_reply_stops_it_and_sends_interrupt(open_page, chatty_browser):
    page = open_page("push-to-talk", chatty_browser)
    page.button.focus()
    page.page.keyboard.down("Space")
    page.wait_state("listening")
    page.page.wait_for_timeout(2200)  # one pass of the question
    page.page.keyboard.up("Space")
    page.wait_state("speaking")
    # The microphone says the question again while the reply plays: the local VAD barges in.
    page.wait_for("window.__vw.events.some(e => e[0] === 'interrupt')")
    interrupt = [c for c in page.controls if c.get("type") == "interrupt"]
    assert len(interrupt) == 1 and interrupt[0]["turn_id"], page.controls
    assert page.recorded()["states"][-1] == "idle"  # push-to-talk: stop and wait for the next press


def _shadow_focus(page: Page) -> str:
    """What has the keyboard focus inside the widget (tag, id or class)."""
    return page.page.evaluate(
        "(() => { const a = document.querySelector('voiceapp-widget').shadowRoot.activeElement;"
        " return a ? (a.id || a.className || a.tagName) : ''; })()"
    )


def test_typed_question_is_answered_on_the_page_and_spoken_with_the_keyboard_only(open_page):
    page = open_page("push-to-talk")
    box = page.page.get_by_label("Type your question")
    assert box.count() == 1 and box.get_attribute("maxlength") == "500"
    page.button.focus()
    page.page.keyboard.press("Tab")  # the hands-free switch
    page.page.keyboard.press("Tab")
    assert _shadow_focus(page) == "vw-text", "the text box is reachable with Tab"
    page.page.keyboard.type(QUESTION_TEXT)
    page.page.keyboard.press("Enter")
    reply = page.wait_reply()
    assert "8:00" in reply, reply
    transcript = page.page.locator("voiceapp-widget .vw-you .vw-final").inner_text()
    assert transcript == QUESTION_TEXT  # the typed text as given, not a recognition of it
    assert box.input_value() == "", "the box is emptied once the question is sent"
    page.wait_for("window.__vw.playback.length > 0")
    assert page.recorded()["playback"][0]["how"] == "audio"  # spoken by the server's voice, like a spoken turn
    texts = [c for c in page.controls if c.get("type") == "text"]
    assert texts == [{"type": "text", "text": QUESTION_TEXT}], page.controls
    assert page.binary_sizes == [], "no microphone audio was sent"
    page.wait_state("idle")
    assert page.recorded()["states"][:2] == ["thinking", "speaking"], page.recorded()["states"]
    page.screenshot("widget-typed-question.png")


def test_reply_speech_fallback_uses_the_reply_language(open_page):
    page = open_page("push-to-talk")
    page.page.route("**/api/v1/voice/sessions/*/audio/*", lambda route: route.fulfill(status=503, body="down"))
    box = page.page.get_by_label("Type your question")
    box.fill("Do you deliver?")
    page.page.get_by_role("button", name="Send").click()
    page.wait_reply()
    page.wait_for("window.__vw.spoken.length > 0")
    reply_events = [e[1] for e in page.recorded()["events"] if e[0] == "reply"]
    assert reply_events, page.recorded()["events"]
    assert page.recorded()["spokenLang"][0] == "en"  # the page's language, carried by the reply event


def test_russian_page_shows_the_russian_ui_and_asks_for_a_russian_session(open_page):
    page = open_page("push-to-talk", lang="ru")
    bodies: list[dict] = []
    page.page.on(
        "request",
        lambda r: bodies.append(r.post_data_json) if r.method == "POST" and r.url.endswith("/sessions") else None,
    )
    assert page.button.get_attribute("aria-label") == "Удерживайте, чтобы говорить"
    widget = page.page.locator("voiceapp-widget")
    assert widget.locator(".vw-status").inner_text() == "Готов"
    assert widget.locator(".vw").get_attribute("lang") == "ru"
    assert widget.locator(".vw").get_attribute("aria-label") == "Голосовой помощник"
    assert "Без рук" in widget.locator(".vw-mode").inner_text()
    box = page.page.get_by_label("Введите вопрос")
    assert box.count() == 1
    assert page.page.get_by_role("button", name="Отправить").count() == 1
    box.fill("Когда вы открываетесь?")
    box.press("Enter")
    page.wait_for("window.__vw.states.includes('thinking')")
    page.wait_for("window.__vw.events.some(e => e[0] === 'transcript' || e[0] === 'error')")
    assert bodies and bodies[0]["language"] == "ru", bodies
    page.screenshot("widget-russian.png")
