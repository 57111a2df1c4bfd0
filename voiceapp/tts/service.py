"""The TTS stage's one entry point: a reply in, one audio chunk per sentence out (cache, fallback, cost)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial

import redis
from pymongo.database import Database
from pymongo.errors import PyMongoError

from voiceapp import metrics
from voiceapp.config import Settings
from voiceapp.errors import TtsError, VoiceError
from voiceapp.models import Synthesis
from voiceapp.storage.audio import REPLIES_BUCKET, new_audio_id, put_audio
from voiceapp.tts import cache, cost
from voiceapp.tts.browser import NAME as BROWSER
from voiceapp.tts.chain import Failure, candidates, no_provider_error, record_failure, record_fallback, try_provider
from voiceapp.tts.festival import INSTALL_HINT
from voiceapp.tts.fresh import NewAudio, Storing
from voiceapp.tts.publisher import Publisher
from voiceapp.tts.registry import describe, mapped_voice, speaks
from voiceapp.tts.sentences import split_sentences
from voiceapp.tts.urgency import urgent

log = logging.getLogger(__name__)
# A reply's cost is recorded (three analytics upserts) while its last chunk is stored and published.
_COST = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tts-cost")


@dataclass(frozen=True)
class ChunkResult:
    """One spoken sentence: audio in GridFS bucket voice_audio (None for the browser provider)."""

    index: int
    total: int
    audio_id: str | None
    provider: str
    text: str
    mime_type: str | None
    cached: bool
    voice: str = ""
    language: str | None = None
    duration: float | None = None
    fallback_from: str | None = None
    speech: dict | None = None  # browser provider: {text, lang, voice} for the widget's speechSynthesis

    @property
    def last(self) -> bool:
        """Whether this is the reply's final chunk."""
        return self.index == self.total - 1

    def to_event(self) -> dict:
        """Data of the `audio` event for this chunk (the caller adds audio_url when audio_id is set)."""
        return {**asdict(self), "last": self.last}


@dataclass(frozen=True)
class SpeechResult:
    """A whole reply spoken: its chunks and what it cost."""

    chunks: tuple[ChunkResult, ...]
    requested_provider: str
    cache_hits: int = 0
    cache_misses: int = 0
    characters_synthesized: int = 0
    cost_usd: float = 0.0
    budget_capped: bool = False
    cost_alert: bool = False
    failures: tuple[Failure, ...] = field(default_factory=tuple)
    provider_seconds: float = 0.0  # inside the voices' own calls (cache hits and storage excluded)

    @property
    def provider(self) -> str:
        """The provider that spoke the first chunk."""
        return self.chunks[0].provider

    @property
    def audio_ids(self) -> list[str]:
        """GridFS ids of the chunks that have audio, in order."""
        return [c.audio_id for c in self.chunks if c.audio_id]

    def to_doc(self) -> dict:
        """A summary for the turn document."""
        return {
            "provider": self.provider,
            "requested_provider": self.requested_provider,
            "providers": sorted({c.provider for c in self.chunks}),
            "voice": self.chunks[0].voice,
            "chunks": len(self.chunks),
            "audio_ids": self.audio_ids,
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "characters_synthesized": self.characters_synthesized,
            "cost_usd": self.cost_usd,
            "budget_capped": self.budget_capped,
            "failures": [f.to_dict() for f in self.failures],
        }


@dataclass
class _Reply:
    """What one reply has used so far (providers that failed are not retried for later sentences)."""

    requested: str
    names: list[str]
    usage: dict[str, int] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)
    hits: int = 0
    misses: int = 0
    cached_characters: int = 0
    provider_seconds: float = 0.0  # time spent in providers (cache hits cost none)
    capped: bool = False  # the project is over its daily budget: free providers only


def synthesize_reply(
    db: Database,
    settings: Settings,
    *,
    text: str,
    voice: str | None = None,
    language: str | None = None,
    provider_name: str | None = None,
    project: str,
    session_id: str,
    turn_id: str = "",
    on_chunk: Callable[[ChunkResult], None] | None = None,
    fresh: redis.Redis | None = None,
) -> SpeechResult:
    """Speak `text` sentence by sentence; `on_chunk` gets each chunk, in order, while the next is synthesized.

    An exception raised by `on_chunk` (the visitor barged in, ...) stops the synthesis and is re-raised here.
    `fresh`: a chunk's new audio is kept in this Redis for its event while its GridFS store runs behind
    (`tts/fresh.py`); without it each chunk is stored before `on_chunk` sees it. Either way, this returns only
    once every chunk's audio is stored.
    """
    sentences = reply_sentences(settings, text)
    if not sentences:
        raise TtsError("nothing to synthesize: empty reply", status=400)
    reply, voice = plan_reply(db, settings, provider_name, voice, language, project)
    capped = reply.capped
    if capped:
        log.warning(
            "project %s reached VOICE_PROJECT_DAILY_BUDGET=%.2f USD: using a free TTS provider",
            project,
            settings.project_daily_budget,
        )
    chunks: list[ChunkResult] = []
    recording: Future | None = None
    publisher = Publisher(on_chunk) if on_chunk is not None and len(sentences) > 1 else None
    storing = Storing(fresh)
    try:
        for index, sentence in enumerate(sentences):
            if publisher is not None:
                publisher.check(in_flight=1)
            with urgent(index == 0):  # a local voice serves waiting first sentences before later ones
                chunk, store = _speak(
                    db, settings, reply, sentence, index, len(sentences), voice, language, session_id, turn_id
                )
            chunks.append(chunk)
            if index == len(sentences) - 1:  # the usage is complete: off the path of the last chunk
                recording = _COST.submit(_record_cost, db, settings, reply, project, session_id)
            if publisher is not None:
                # Made fetchable and published while the next sentence is synthesized.
                publisher.put(chunk, partial(storing.start, store))
            else:
                storing.start(store)
                if on_chunk is not None:
                    on_chunk(chunk)
        if publisher is not None:
            publisher.close()
        storing.wait()
    finally:
        if publisher is not None:
            publisher.abandon()
        storing.settle()  # a reply stopped early: what was published is still recorded
        # Stopped before the last sentence (a barge-in, a failure): what was spoken so far is still counted.
        record = recording.result() if recording is not None else _record_cost(db, settings, reply, project, session_id)
    if reply.usage and chunks:
        # Once per reply, provider time only: a reply spoken wholly from the cache is not observed.
        metrics.observe_synthesis(chunks[0].provider, reply.provider_seconds)
    return SpeechResult(
        chunks=tuple(chunks),
        requested_provider=reply.requested,
        cache_hits=reply.hits,
        cache_misses=reply.misses,
        characters_synthesized=sum(reply.usage.values()),
        cost_usd=record.cost_usd if record else 0.0,
        budget_capped=capped,
        cost_alert=bool(record and record.alert_raised),
        failures=tuple(reply.failures),
        provider_seconds=round(reply.provider_seconds, 4),
    )


def free_reply(settings: Settings, provider_name: str | None, voice: str | None, language: str | None) -> bool:
    """Whether every provider a reply could use costs nothing (no paid vendor on its fallback chain)."""
    requested, _ = _for_language(settings, provider_name, voice, language)
    return all(cost.is_free(settings, name) for name in candidates(settings, requested))


def reply_sentences(settings: Settings, text: str) -> list[str]:
    """The pieces a reply is spoken in, in order (the first one short, so the first audio comes soon)."""
    return split_sentences(text, settings.tts_max_chunk_chars, settings.tts_first_chunk_chars or None)


def sentence_key(
    settings: Settings, name: str, sentence: str, voice: str | None, language: str | None
) -> cache.CacheKey:
    """The cache key of `sentence` spoken by provider `name` (the TTS stage's and a prepared reply's, alike)."""
    key_voice, fmt = describe(settings, name, voice, language)
    return cache.make_key(sentence, voice=key_voice, language=language, provider=name, fmt=fmt)


def plan_reply(
    db: Database, settings: Settings, provider_name: str | None, voice: str | None, language: str | None, project: str
) -> tuple[_Reply, str | None]:
    """The providers a reply tries, in order, and the voice of the first (the language and the budget decide)."""
    requested, voice = _for_language(settings, provider_name, voice, language)
    capped = cost.over_budget(db, settings, project)
    names = [n for n in candidates(settings, requested, free_only=capped) if speaks(settings, n, language)]
    if requested not in names and not capped and names:
        # The requested provider has no voice for this language (Piper's English voice, Russian reply):
        # route to the first one that has, which is a choice of voice, not a failure.
        log.info("TTS provider %s has no %s voice: %s speaks this reply", requested, language, names[0])
        requested, voice = names[0], None
        if requested == BROWSER:
            _tell_no_local_voice(language)
    return _Reply(requested, names or candidates(settings, requested, free_only=capped), capped=capped), voice


_told: set[str] = set()


def _tell_no_local_voice(language: str | None) -> None:
    """Say once per language and process that the visitor's browser speaks, and how to get a local voice."""
    if language in _told:
        return
    _told.add(language or "")
    log.warning(
        "no local voice for language %s: the visitor's browser speaks these replies (speechSynthesis); "
        "for a server-side Russian voice: %s",
        language,
        INSTALL_HINT,
    )


def _for_language(
    settings: Settings, provider_name: str | None, voice: str | None, language: str | None
) -> tuple[str, str | None]:
    """(provider, voice) for a reply: the session's choice, else TTS_VOICES for its language, else the default."""
    if not provider_name:
        mapped = mapped_voice(settings, language)
        if mapped is not None:
            return mapped[0], voice or mapped[1]
    return (provider_name or settings.tts_provider).strip().lower(), voice


def _record_cost(db: Database, settings: Settings, reply: _Reply, project: str, session_id: str):
    """Add this reply's usage to the analytics; a storage hiccup there must not fail audio already sent."""
    if not (reply.usage or reply.cached_characters):
        return None
    try:
        return cost.record(
            db,
            settings,
            project=project,
            session_id=session_id,
            usage=reply.usage,
            cached_characters=reply.cached_characters,
        )
    except PyMongoError as err:
        log.warning("could not record TTS cost for project %s: %s", project, err)
        return None


def _speak(
    db: Database,
    settings: Settings,
    reply: _Reply,
    sentence: str,
    index: int,
    total: int,
    voice: str | None,
    language: str | None,
    session_id: str,
    turn_id: str,
) -> tuple[ChunkResult, Callable[[], object]]:
    """One sentence, from the cache of the first provider that has it, else from the first that answers; and
    what stores its new audio (under the id the chunk already names), for the caller to run before publishing."""
    failures: list[Failure] = []
    for name in reply.names:
        if name in reply.broken:
            continue
        # Voice names are provider-specific: a fallback speaks in its own default voice.
        wanted = voice if name == reply.requested else None
        try:
            chunk, store = _from_cache_or_provider(
                db, settings, reply, name, sentence, wanted, language, session_id, turn_id
            )
        except VoiceError as err:
            failures.append(record_failure(reply.requested, name, err))
            reply.broken.add(name)
            continue
        reply.failures.extend(failures)
        if failures and name != reply.requested:
            # Counted once per failure; later sentences of this reply go straight to `name`.
            record_fallback(reply.requested, name, failures)
        fallback_from = reply.requested if name != reply.requested else None
        return ChunkResult(index=index, total=total, fallback_from=fallback_from, **chunk), store
    reply.failures.extend(failures)
    raise no_provider_error(reply.failures)


def _from_cache_or_provider(
    db: Database,
    settings: Settings,
    reply: _Reply,
    name: str,
    sentence: str,
    voice: str | None,
    language: str | None,
    session_id: str,
    turn_id: str,
) -> tuple[dict, Callable[[], object]]:
    """Chunk fields for `sentence` spoken by provider `name`, and the store of new audio (a no-op for cached or
    browser speech); ProviderUnavailable/TtsError when it cannot speak it."""
    key = sentence_key(settings, name, sentence, voice, language)
    cacheable = settings.cache_audio and name != BROWSER
    if cacheable:
        entry = cache.lookup(db, settings, key)
        if entry is not None:
            metrics.CACHE_HITS.inc()
            reply.hits += 1
            reply.cached_characters += len(sentence)
            fields = _fields(
                entry.audio_id, name, sentence, entry.mime_type, True, entry.voice, language, entry.duration
            )
            return fields, _nothing
    started = time.perf_counter()
    synthesis = try_provider(settings, name, sentence, voice, language)
    reply.provider_seconds += time.perf_counter() - started
    if synthesis.provider != BROWSER and not synthesis.audio:
        raise TtsError(f"{name} returned no audio")
    reply.usage[name] = reply.usage.get(name, 0) + len(sentence)
    if synthesis.provider == BROWSER:
        speech = synthesis.extra.get("speech")
        return _fields(None, name, sentence, None, False, synthesis.voice, language, None, speech=speech), _nothing
    audio_id = new_audio_id()
    store: Callable[[], object]
    if cacheable:
        metrics.CACHE_MISSES.inc()
        reply.misses += 1
        store = partial(cache.store, db, settings, key, synthesis, session_id=session_id, audio_id=audio_id)
    else:
        store = partial(_store_uncached, db, synthesis, session_id, turn_id, audio_id)
    fields = _fields(
        audio_id, name, sentence, synthesis.mime_type, False, synthesis.voice, language, synthesis.duration
    )
    return fields, NewAudio(
        audio_id, synthesis.audio, synthesis.mime_type or "application/octet-stream", session_id, store
    )


def _nothing() -> None:
    """The store of a chunk whose audio is already stored (a cache hit) or not audio at all (browser speech)."""


def _fields(
    audio_id: str | None,
    provider: str,
    text: str,
    mime_type: str | None,
    cached: bool,
    voice: str,
    language: str | None,
    duration: float | None,
    speech: dict | None = None,
) -> dict:
    return {
        "audio_id": audio_id,
        "provider": provider,
        "text": text,
        "mime_type": mime_type,
        "cached": cached,
        "voice": voice,
        "language": language,
        "duration": duration,
        "speech": speech,
    }


def _store_uncached(db: Database, synthesis: Synthesis, session_id: str, turn_id: str, audio_id: str) -> str:
    """Reply audio when VOICE_CACHE_AUDIO=false: a plain file of this session's turn."""
    return put_audio(
        db,
        synthesis.audio,
        bucket=REPLIES_BUCKET,
        filename=f"{turn_id or 'reply'}.audio",
        content_type=synthesis.mime_type,
        metadata={
            "cache": False,
            "session_id": session_id,
            "turn_id": turn_id,
            "provider": synthesis.provider,
            "voice": synthesis.voice,
        },
        audio_id=audio_id,
    )


__all__ = ["ChunkResult", "SpeechResult", "synthesize_reply"]
