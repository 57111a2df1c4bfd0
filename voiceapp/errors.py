"""Typed errors: one per stage, each with a stable code and an HTTP status."""

from __future__ import annotations


class VoiceError(Exception):
    """Base error: `code` is stable for clients, `message` is safe to show them."""

    code = "voice_error"
    status = 500

    def __init__(self, message: str, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def __reduce__(self):
        # Celery pickles exceptions between worker and backend: keep code and status.
        return (type(self), (self.message, self.code, self.status))

    def to_dict(self) -> dict[str, str]:
        """The JSON body clients get: {"code", "message"}."""
        return {"code": self.code, "message": self.message}


class SettingsProblem(VoiceError):
    code, status = "settings_invalid", 500


class AudioError(VoiceError):
    """Audio that cannot be decoded or breaks a limit."""

    code, status = "invalid_audio_payload", 400


class AudioTooLong(AudioError):
    code, status = "audio_too_long", 413


class SttError(VoiceError):
    code, status = "stt_failed", 502


class DialogError(VoiceError):
    code, status = "dialog_failed", 502


class TtsError(VoiceError):
    code, status = "tts_failed", 502


class ProviderUnavailable(VoiceError):
    """An engine or provider whose SDK, key or model is missing; the message says what to set."""

    code, status = "provider_unavailable", 503


class SessionNotFound(VoiceError):
    code, status = "voice_session_not_found", 404


class SessionExpired(VoiceError):
    code, status = "voice_session_expired", 410


class AuthError(VoiceError):
    code, status = "unauthorized", 401


class ForbiddenError(VoiceError):
    code, status = "forbidden", 403


class NotFound(VoiceError):
    code, status = "not_found", 404


class BadRequest(VoiceError):
    code, status = "bad_request", 400


class PayloadTooLarge(VoiceError):
    code, status = "payload_too_large", 413


class LimitExceeded(VoiceError):
    code, status = "limit_exceeded", 429


class StorageUnavailable(VoiceError):
    code, status = "storage_unavailable", 503
