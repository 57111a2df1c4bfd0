"""Logging set-up with a filter that masks every configured secret."""

from __future__ import annotations

import logging

from .config import Settings

MASK = "***"


class SecretFilter(logging.Filter):
    """Replaces secret values in formatted log messages; keeps keys out of logs whatever code logs."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if len(s) >= 4)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        masked = message
        for secret in self._secrets:
            masked = masked.replace(secret, MASK)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def configure_logging(settings: Settings) -> None:
    """Root logging at settings.log_level, secrets masked on every handler."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root.setLevel(settings.log_level.upper())
    secret_filter = SecretFilter(settings.secrets)
    for handler in root.handlers:
        handler.addFilter(secret_filter)
