"""Typed errors that carry their HTTP status and the OpenAI error fields."""

from __future__ import annotations

from collections.abc import Mapping


class CrossguardError(Exception):
    """Base of every error that reaches a client; rendered as an OpenAI error body."""

    status_code = 500
    error_type = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 retry_after: int | None = None, headers: Mapping[str, str] | None = None):
        """`headers` go out with the response (a 401's `WWW-Authenticate`); `retry_after` adds
        `Retry-After` (429, 503)."""
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after
        self._headers = dict(headers or {})

    def headers(self) -> dict[str, str]:
        retry = {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}
        return {**self._headers, **retry}

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class BadRequest(CrossguardError):
    status_code = 400
    error_type = "invalid_request_error"


class NotFound(CrossguardError):
    status_code = 404
    error_type = "not_found_error"


class Conflict(CrossguardError):
    status_code = 409
    error_type = "invalid_request_error"


class PayloadTooLarge(CrossguardError):
    status_code = 413
    error_type = "invalid_request_error"


class Unprocessable(CrossguardError):
    status_code = 422
    error_type = "invalid_request_error"


class NotReady(CrossguardError):
    status_code = 503
    error_type = "service_unavailable"


class Unauthorized(CrossguardError):
    status_code = 401
    error_type = "authentication_error"


class Forbidden(CrossguardError):
    status_code = 403
    error_type = "permission_error"


class TooManyRequests(CrossguardError):
    """The wait queue is full: the client should retry after `retry_after` seconds."""

    status_code = 429
    error_type = "rate_limit_error"
