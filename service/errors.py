"""Typed errors that carry their HTTP status and the OpenAI error fields."""

from __future__ import annotations


class CrossguardError(Exception):
    """Base of every error that reaches a client; rendered as an OpenAI error body."""

    status_code = 500
    error_type = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

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


class PayloadTooLarge(CrossguardError):
    status_code = 413
    error_type = "invalid_request_error"


class Unprocessable(CrossguardError):
    status_code = 422
    error_type = "invalid_request_error"


class NotReady(CrossguardError):
    status_code = 503
    error_type = "service_unavailable"
