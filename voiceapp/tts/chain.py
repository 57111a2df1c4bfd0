"""Fallback: try the requested provider, then the TTS_FALLBACK_CHAIN, each within TTS_TIMEOUT."""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from voiceapp import metrics
from voiceapp.config import Settings
from voiceapp.errors import ProviderUnavailable, TtsError, VoiceError
from voiceapp.models import Synthesis
from voiceapp.tts.registry import FREE_PROVIDERS, get_provider

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Failure:
    """One provider that could not answer, and why."""

    provider: str
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        """For turn documents and events."""
        return {"provider": self.provider, "code": self.code, "message": self.message}


def candidates(settings: Settings, requested: str | None, *, free_only: bool = False) -> list[str]:
    """Providers to try in order: the requested one, then the chain, each once (only free ones when capped)."""
    names: list[str] = []
    for name in (requested or settings.tts_provider, *settings.tts_fallback_chain):
        name = name.strip().lower()
        if name and name not in names and (not free_only or name in FREE_PROVIDERS):
            names.append(name)
    if free_only and not names:
        names = list(FREE_PROVIDERS)
    return names


def call_with_timeout(func: Callable[..., T], timeout: float, *args) -> T:
    """func(*args), or TtsError(code tts_timeout) after `timeout` s (the call is left to finish in its thread)."""
    box: dict[str, object] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["value"] = func(*args)
        except BaseException as err:  # noqa: BLE001  (handed to the caller's thread, which re-raises it)
            box["error"] = err
        finally:
            done.set()

    # The caller's context goes with the call (whether this is a reply's first sentence: tts.urgency).
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(run,), name="tts-call", daemon=True).start()
    if not done.wait(timeout):
        raise TtsError(f"no answer within TTS_TIMEOUT={timeout:g} s", code="tts_timeout", status=504)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def try_provider(settings: Settings, name: str, text: str, voice: str | None, language: str | None) -> Synthesis:
    """One provider's synthesis (the reply adds up its time into voice_synthesis_duration_seconds); typed errors only."""
    provider = get_provider(settings, name)
    try:
        synthesis = call_with_timeout(provider.synthesize, settings.tts_timeout, text, voice, language)
    except VoiceError:
        raise
    except Exception as err:  # a provider bug must not stop the chain
        raise TtsError(f"{name} failed: {type(err).__name__}: {str(err)[:200]}") from err
    return synthesis


def record_failure(requested: str, name: str, err: VoiceError) -> Failure:
    """Log a provider that could not answer."""
    level = logging.INFO if isinstance(err, ProviderUnavailable) and name != requested else logging.WARNING
    log.log(level, "TTS provider %s could not answer (%s): %s", name, err.code, err.message)
    return Failure(name, err.code, err.message)


def record_fallback(requested: str, answered: str, failures: list[Failure]) -> None:
    """Count and log that `answered` spoke for `requested`."""
    metrics.TTS_FALLBACKS.labels(requested, answered).inc()
    log.warning(
        "TTS fell back from %s to %s after: %s",
        requested,
        answered,
        "; ".join(f"{f.provider}: {f.code}" for f in failures),
    )


def no_provider_error(failures: list[Failure]) -> TtsError:
    """The error when every provider failed: names each one and why."""
    detail = "; ".join(f"{f.provider}: {f.message}" for f in failures) or "no provider configured"
    return TtsError(f"no TTS provider could speak ({detail})", code="tts_unavailable", status=503)
