"""Every error as JSON: {"error": {"code", "message"}} with its HTTP status."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

from ..errors import StorageUnavailable, VoiceError

log = logging.getLogger(__name__)


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    429: "rate_limited",
}


def _body(code: str, message: str, status: int):
    return jsonify({"error": {"code": code, "message": message}}), status


def init_app(app: Flask) -> None:
    """Register the JSON error handlers."""

    @app.errorhandler(VoiceError)
    def _voice_error(err: VoiceError):
        response = _body(err.code, err.message, err.status)
        retry_after = getattr(err, "retry_after", None)
        if retry_after:
            response[0].headers["Retry-After"] = str(retry_after)
        return response

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        code = _HTTP_CODES.get(err.code or 500, "http_error")
        message = err.description or err.name
        if err.code == 429:
            message = f"rate limit exceeded ({err.description}); slow down"
        return _body(code, message, err.code or 500)

    @app.errorhandler(PyMongoError)
    def _mongo_down(err: PyMongoError):
        log.error("MongoDB error: %s", err)
        unavailable = StorageUnavailable("the database is unavailable; retry in a few seconds")
        return _body(unavailable.code, unavailable.message, unavailable.status)

    @app.errorhandler(RedisError)
    def _redis_down(err: RedisError):
        log.error("Redis error: %s", err)
        return _body("queue_unavailable", "the message broker is unavailable; retry in a few seconds", 503)
