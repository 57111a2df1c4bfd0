"""Settings: every seed variable with its default, typed parsing, clear errors naming the variable."""

import re
from pathlib import Path

import pytest

from voiceapp.config import Settings, SettingsError

SEED_GUIDE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "seed-deployment-guide.txt"

SEED_DEFAULTS = {
    "WHISPER_DEVICE": ("whisper_device", "auto"),
    "VOSK_MODEL_PATH": ("vosk_model_path", "./models/vosk-model-small-ru-0.22"),
    "ELEVENLABS_VOICE_ID": ("elevenlabs_voice_id", "21m00Tcm4TlvDq8ikWAM"),
    "AZURE_SPEECH_REGION": ("azure_speech_region", "westeurope"),
    "VOICE_SESSION_TIMEOUT": ("session_timeout", 3600),
    "VOICE_MAX_CONCURRENT_SESSIONS": ("max_concurrent_sessions", 100),
    "VOICE_CACHE_AUDIO": ("cache_audio", True),
    "VOICE_CACHE_TTL": ("cache_ttl", 604800),
    "WS_MAX_CONNECTIONS": ("ws_max_connections", 1000),
    "WS_PING_INTERVAL": ("ws_ping_interval", 30.0),
    "AUDIO_SAMPLE_RATE": ("audio_sample_rate", 16000),
    "AUDIO_CHUNK_DURATION": ("audio_chunk_duration", 1.0),
    "AUDIO_MAX_DURATION": ("audio_max_duration", 60.0),
    "DIALOG_MAX_CONTEXT_LENGTH": ("dialog_max_context_length", 10),
    "DIALOG_INTENT_CONFIDENCE_THRESHOLD": ("dialog_intent_confidence_threshold", 0.7),
    "VOICE_ENABLE_COST_TRACKING": ("enable_cost_tracking", True),
    "VOICE_COST_ALERT_THRESHOLD": ("cost_alert_threshold", 100.0),
    "MONGO_VOICE_SESSIONS": ("sessions_collection", "voice_sessions"),
    "MONGO_VOICE_INTERACTIONS": ("interactions_collection", "voice_interactions"),
    "MONGO_VOICE_AUDIO_CACHE": ("audio_cache_collection", "voice_audio_cache"),
    "MONGO_VOICE_ANALYTICS": ("analytics_collection", "voice_analytics"),
}


def test_every_variable_of_the_seed_guide_is_a_setting():
    seed_vars = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", SEED_GUIDE.read_text(), re.M))
    assert seed_vars, "the seed guide lists variables"
    known = set(Settings.env_names().values())
    assert seed_vars - known == set()


def test_defaults_match_the_seed_guide():
    settings = Settings.from_env({})
    for env, (attr, default) in SEED_DEFAULTS.items():
        assert getattr(settings, attr) == default, env
    assert settings.api_host == "127.0.0.1" and settings.api_port == 8000
    assert settings.ws_port is None


def test_values_are_parsed_by_type():
    settings = Settings.from_env(
        {
            "VOICE_CACHE_AUDIO": "false",
            "AUDIO_MAX_DURATION": "12.5",
            "WS_PORT": "8001",
            "VOICE_SESSION_TIMEOUT": "60",
            "MONGO_VOICE_SESSIONS": "s2",
        }
    )
    assert settings.cache_audio is False
    assert settings.audio_max_duration == 12.5
    assert settings.ws_port == 8001
    assert settings.session_timeout == 60
    assert settings.sessions_collection == "s2"


@pytest.mark.parametrize(
    "env, value",
    [
        ("VOICE_SESSION_TIMEOUT", "soon"),
        ("VOICE_SESSION_TIMEOUT", "-5"),
        ("VOICE_CACHE_AUDIO", "maybe"),
        ("WHISPER_DEVICE", "tpu"),
        ("API_PORT", "70000"),
        ("DIALOG_INTENT_CONFIDENCE_THRESHOLD", "1.5"),
        ("AUDIO_CHUNK_DURATION", "0"),
    ],
)
def test_bad_values_fail_naming_the_variable(env, value):
    with pytest.raises(SettingsError, match=env):
        Settings.from_env({env: value})


def test_secret_values_stay_out_of_errors_and_repr():
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"VOICE_SECRET_KEY": "x", "API_PORT": "nope"})
    settings = Settings.from_env({"ELEVENLABS_API_KEY": "sk-very-secret-1234"})
    assert "sk-very-secret-1234" not in repr(settings)
    assert "sk-very-secret-1234" in settings.secrets
    assert "nope" in str(info.value)


def test_to_env_round_trips():
    settings = Settings.from_env({"VOICE_CACHE_AUDIO": "false", "WS_PORT": "9001", "WHISPER_MODEL": "base"})
    assert Settings.from_env(settings.to_env()) == settings


def test_tts_provider_defaults_to_the_offline_voice_without_keys():
    assert Settings.from_env({}).tts_provider == "piper"
    assert Settings.from_env({"ELEVENLABS_API_KEY": "k1234"}).tts_provider == "elevenlabs"
    assert (
        Settings.from_env({"TTS_DEFAULT_PROVIDER": "browser", "ELEVENLABS_API_KEY": "k1234"}).tts_provider == "browser"
    )
