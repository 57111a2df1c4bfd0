"""A reply's first sentence spoken into the audio cache ahead of its turn (speculative reply, issue 15).

Exactly what the TTS stage will look up first (same sentence split, provider, voice, language and format, so the
same cache key), and nothing else: no event, no turn field, no hit/miss counter. A free provider's characters are
not recorded either (the turn that uses the sentence records them as a cache hit); a paid one's are, since they
are spent whether or not the turn ever uses them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pymongo.database import Database

from voiceapp.config import Settings
from voiceapp.tts import cache, cost
from voiceapp.tts.browser import NAME as BROWSER
from voiceapp.tts.chain import try_provider
from voiceapp.tts.service import plan_reply, reply_sentences, sentence_key
from voiceapp.tts.urgency import urgent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """The sentence now in the cache, which provider speaks it, and whether this call synthesized it."""

    sentence: str
    provider: str
    synthesized: bool


def first_sentence(settings: Settings, text: str) -> str | None:
    """The piece of `text` the TTS stage speaks first."""
    sentences = reply_sentences(settings, text)
    return sentences[0] if sentences else None


def prepare_first_sentence(
    db: Database,
    settings: Settings,
    *,
    text: str,
    voice: str | None,
    language: str | None,
    provider_name: str | None,
    project: str,
    session_id: str,
    paid: bool,
) -> Prepared | None:
    """Put the first sentence of reply `text` into the cache; None when nothing can or may be prepared.

    `paid` False: only a provider with no price per character is used (SPECULATIVE_REPLY=auto).
    """
    sentence = first_sentence(settings, text)
    if sentence is None or not settings.cache_audio:
        return None
    reply, voice = plan_reply(db, settings, provider_name, voice, language, project)
    name = reply.names[0] if reply.names else None
    if name is None or name == BROWSER or not (paid or cost.is_free(settings, name)):
        return None  # the browser speaks in the page (nothing to cache); a paid vendor only when allowed
    wanted = voice if name == reply.requested else None  # as the TTS stage does: voices are provider-specific
    key = sentence_key(settings, name, sentence, wanted, language)
    if cache.lookup(db, settings, key, touch=False) is not None:
        return Prepared(sentence, name, synthesized=False)
    with urgent():  # the first sentence of a reply about to be asked for: ahead of other replies' later ones
        synthesis = try_provider(settings, name, sentence, wanted, language)
    cache.store(db, settings, key, synthesis, session_id=session_id)
    if not cost.is_free(settings, name):
        cost.record(db, settings, project=project, session_id=session_id, usage={name: len(sentence)})
    return Prepared(sentence, name, synthesized=True)
