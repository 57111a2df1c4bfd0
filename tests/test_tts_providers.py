"""TTS providers behind one interface: ElevenLabs and Azure SDKs against local fakes of their APIs, browser hints,
availability messages, sentence splitting."""

from __future__ import annotations

import sys

import pytest

from tests.fakes import azure_speech
from tests.fakes import elevenlabs as fake_elevenlabs
from voiceapp.audio import wav_info
from voiceapp.config import Settings
from voiceapp.errors import ProviderUnavailable, TtsError
from voiceapp.tts.base import TtsProvider
from voiceapp.tts.chain import call_with_timeout, candidates
from voiceapp.tts.registry import describe, get_provider, provider_status
from voiceapp.tts.sentences import split_sentences

XI_KEY = "xi-test-key-123"


@pytest.fixture(scope="module")
def eleven():
    state, server = fake_elevenlabs.start(XI_KEY)
    yield state
    server.shutdown()


@pytest.fixture(scope="module")
def azure():
    state, _thread = azure_speech.start()
    return state


@pytest.fixture
def el_settings(eleven) -> Settings:
    eleven.reset()
    return Settings.from_env({}, elevenlabs_api_key=XI_KEY, elevenlabs_base_url=eleven.url, tts_timeout=3.0)


@pytest.fixture
def az_settings(azure) -> Settings:
    azure.reset()
    return Settings.from_env({}, azure_speech_key=azure.key, azure_speech_host=azure.host, tts_timeout=5.0)


# ---- ElevenLabs (SDK -> local HTTP fake) ----


def test_elevenlabs_sends_the_documented_request(el_settings, eleven):
    provider = get_provider(el_settings, "elevenlabs")
    assert isinstance(provider, TtsProvider) and provider.name == "elevenlabs"
    result = provider.synthesize("Hello from the site.", None, "en-US")
    [request] = eleven.requests
    assert request.path == "/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM"
    assert request.query == {"output_format": "mp3_44100_128"}
    assert request.headers["xi-api-key"] == XI_KEY
    assert request.body == {"text": "Hello from the site.", "model_id": "eleven_multilingual_v2"}
    assert result.audio == fake_elevenlabs.FAKE_MP3 and result.mime_type == "audio/mpeg"
    assert (result.provider, result.voice, result.sample_rate) == ("elevenlabs", "21m00Tcm4TlvDq8ikWAM", 44100)


def test_elevenlabs_voice_format_and_language_enforcement(el_settings, eleven):
    settings = el_settings.replace(elevenlabs_output_format="wav_22050", elevenlabs_model_id="eleven_flash_v2_5")
    result = get_provider(settings, "elevenlabs").synthesize("Привет.", "voiceXYZ", "ru-RU")
    [request] = eleven.requests
    assert request.path == "/v1/text-to-speech/voiceXYZ" and request.query["output_format"] == "wav_22050"
    assert request.body["language_code"] == "ru" and request.body["model_id"] == "eleven_flash_v2_5"
    assert result.mime_type == "audio/wav" and wav_info(result.audio)[0] == 22050


def test_elevenlabs_http_errors_are_tts_errors_without_the_key(el_settings, eleven):
    eleven.reset("error")
    with pytest.raises(TtsError) as info:
        get_provider(el_settings, "elevenlabs").synthesize("Hello.")
    assert "HTTP 500" in info.value.message
    bad = el_settings.replace(elevenlabs_api_key="wrong-key-456")
    eleven.reset()
    with pytest.raises(TtsError) as info:
        get_provider(bad, "elevenlabs").synthesize("Hello.")
    assert "HTTP 401" in info.value.message and "wrong-key-456" not in info.value.message
    assert len(eleven.requests) == 1  # no SDK retries: the fallback chain decides what happens next


def test_elevenlabs_slow_answer_times_out(el_settings, eleven):
    eleven.reset("slow", delay=3.0)
    provider = get_provider(el_settings.replace(tts_timeout=0.5), "elevenlabs")
    with pytest.raises(TtsError) as info:
        call_with_timeout(provider.synthesize, 0.5, "Hello.")
    assert info.value.code == "tts_timeout"


def test_elevenlabs_unavailable_without_key_or_sdk(monkeypatch):
    settings = Settings.from_env({})
    assert "ELEVENLABS_API_KEY" in provider_status(settings)["elevenlabs"]
    with pytest.raises(ProviderUnavailable) as info:
        get_provider(settings, "elevenlabs")
    assert "ELEVENLABS_API_KEY" in info.value.message
    monkeypatch.setitem(sys.modules, "elevenlabs", None)  # what find_spec reports for a missing package
    status = provider_status(settings.replace(elevenlabs_api_key="k"))
    assert "pip install 'voiceapp[elevenlabs]'" in status["elevenlabs"]


# ---- Azure (SDK -> local WebSocket fake of the USP protocol) ----


def test_azure_synthesizes_through_the_sdk(az_settings, azure):
    provider = get_provider(az_settings, "azure")
    result = provider.synthesize("Hello <there> & welcome.", None, "en-US")
    [connection] = azure.connections
    assert connection["path"] == "/cognitiveservices/websocket/v1"
    assert connection["headers"]["ocp-apim-subscription-key"] == azure.key
    assert azure.contexts[0]["synthesis"]["audio"]["outputFormat"] == "raw-24khz-16bit-mono-pcm"
    assert azure.ssml == [
        '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">'
        '<voice name="en-US-JennyNeural">Hello &lt;there&gt; &amp; welcome.</voice></speak>'
    ]
    rate, channels, duration = wav_info(result.audio)
    assert (rate, channels, result.mime_type, result.provider) == (24000, 1, "audio/wav", "azure")
    assert duration == pytest.approx(0.05 * len("Hello <there> & welcome."), abs=0.01)


def test_azure_picks_a_voice_for_the_language(az_settings, azure):
    result = get_provider(az_settings, "azure").synthesize("Добрый день.", None, "ru-RU")
    assert result.voice == "ru-RU-SvetlanaNeural"
    assert 'xml:lang="ru-RU"><voice name="ru-RU-SvetlanaNeural">' in azure.ssml[0]
    assert get_provider(az_settings, "azure").synthesize("Hi.", "en-US-GuyNeural", "en-US").voice == "en-US-GuyNeural"


def test_azure_errors(az_settings, azure):
    azure.reset("error")
    with pytest.raises(TtsError) as info:
        get_provider(az_settings, "azure").synthesize("Hello.")
    assert "Invalid SSML" in info.value.message
    azure.reset()
    with pytest.raises(TtsError) as info:
        get_provider(az_settings.replace(azure_speech_key="bad-az-key"), "azure").synthesize("Hello.")
    assert "401" in info.value.message and "bad-az-key" not in info.value.message


def test_azure_unavailable_without_key_or_sdk(monkeypatch):
    settings = Settings.from_env({})
    assert "AZURE_SPEECH_KEY" in provider_status(settings)["azure"]
    monkeypatch.setitem(sys.modules, "azure.cognitiveservices.speech", None)
    assert "pip install 'voiceapp[azure]'" in provider_status(settings.replace(azure_speech_key="k"))["azure"]


# ---- browser ----


def test_browser_returns_speech_hints_not_audio():
    settings = Settings.from_env({}, default_language="ru-RU")
    provider = get_provider(settings, "browser")
    assert provider_status(settings)["browser"] == "ok"
    result = provider.synthesize("Здравствуйте!", "Google русский", None)
    assert result.audio == b"" and result.provider == "browser"
    assert result.extra["speech"] == {"text": "Здравствуйте!", "lang": "ru-RU", "voice": "Google русский"}


# ---- choosing providers ----


def test_default_provider_follows_keys():
    assert Settings.from_env({}).tts_provider == "piper"
    assert Settings.from_env({"ELEVENLABS_API_KEY": "k"}).tts_provider == "elevenlabs"
    assert Settings.from_env({"AZURE_SPEECH_KEY": "k"}).tts_provider == "azure"
    assert Settings.from_env({"AZURE_SPEECH_KEY": "k", "TTS_DEFAULT_PROVIDER": "browser"}).tts_provider == "browser"


def test_candidates_order_and_budget_cap():
    settings = Settings.from_env({"TTS_FALLBACK_CHAIN": "azure, piper,browser"})
    assert candidates(settings, "elevenlabs") == ["elevenlabs", "azure", "piper", "browser"]
    assert candidates(settings, "piper") == ["piper", "azure", "browser"]
    assert candidates(settings, "elevenlabs", free_only=True) == ["piper", "browser"]
    # Every free provider (festival speaks only the languages it has a voice for: Russian here).
    assert candidates(settings.replace(tts_fallback_chain=("azure",)), "elevenlabs", free_only=True) == [
        "piper",
        "festival",
        "browser",
    ]


def test_cache_key_parts_are_known_without_calling_the_vendor():
    settings = Settings.from_env({})
    assert describe(settings, "piper", "ignored", "en-US") == ("en_US-joe-medium", "wav")
    assert describe(settings, "elevenlabs", None, None) == ("21m00Tcm4TlvDq8ikWAM", "mp3_44100_128")
    assert describe(settings, "azure", None, "ru-RU") == ("ru-RU-SvetlanaNeural", "wav_24000")


# ---- sentences ----


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "Hello there! We open at 9 a.m. on Saturday. See you?",
            ["Hello there!", "We open at 9 a.m. on Saturday.", "See you?"],
        ),
        (
            'Dr. Smith costs 3.50 dollars... Really. "Yes." Done',
            ["Dr. Smith costs 3.50 dollars...", "Really.", '"Yes."', "Done"],
        ),
        (
            "Привет. Мы открыты с 9 утра, т.е. рано! Ул. Ленина, д. 5.",
            ["Привет.", "Мы открыты с 9 утра, т.е. рано!", "Ул. Ленина, д. 5."],
        ),
        ("  one   line  ", ["one line"]),
        ("   ", []),
    ],
)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_long_sentences_are_cut_at_clauses_then_words():
    text = "first clause here, " * 40
    pieces = split_sentences(text, max_chars=100)
    assert all(len(p) <= 100 for p in pieces) and all(p.endswith(",") for p in pieces[:-1])
    assert " ".join(pieces).split() == text.split()
    words = split_sentences("word " * 60, max_chars=50)
    assert all(len(p) <= 50 for p in words) and sum(len(p.split()) for p in words) == 60


def test_a_long_first_sentence_is_cut_at_a_clause_for_a_faster_first_audio():
    text = (
        "Our store on the main square is open from nine in the morning, every day except Sunday, "
        "until six in the evening. Come by."
    )
    assert split_sentences(text, first_max_chars=90) == [
        "Our store on the main square is open from nine in the morning,",
        "every day except Sunday, until six in the evening.",
        "Come by.",
    ]
    assert split_sentences(text)[0].endswith("evening.")
    assert split_sentences("Yes, we do. Fine.", first_max_chars=5) == ["Yes, we do.", "Fine."]


def test_a_first_sentence_without_an_early_comma_is_cut_before_a_conjunction():
    assert split_sentences("From Monday to Friday we open at 7:00 am and close at 7:00 pm.", first_max_chars=50) == [
        "From Monday to Friday we open at 7:00 am",
        "and close at 7:00 pm.",
    ]
    assert split_sentences("В субботу мы открываемся в 9 утра и закрываемся в 10 вечера.", first_max_chars=50) == [
        "В субботу мы открываемся в 9 утра",
        "и закрываемся в 10 вечера.",
    ]
    # The pieces are the reply's own text: joined, they give it back.
    reply = "We have 30 seats inside and a terrace with 12 seats that is open from April to October. Dogs too."
    assert " ".join(split_sentences(reply, first_max_chars=50)) == reply
    # A comma is preferred to a conjunction, and a sentence within the limit stays whole.
    commas = split_sentences("The shop opens at nine and closes at six, every day of the week.", first_max_chars=50)
    assert commas[0] == "The shop opens at nine and closes at six,"
    assert split_sentences("On Sunday we open at 9:00 am and close at 3:00 pm.", first_max_chars=50) == [
        "On Sunday we open at 9:00 am and close at 3:00 pm."
    ]
