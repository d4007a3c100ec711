"""The FastAPI app mounted at /v1: OpenAI error bodies for every failure, request size cap.

BentoML's own `@bentoml.api` error format (`{"error": "..."}`, 400 for validation) is not
OpenAI's, so the OpenAI routes live in a mounted FastAPI app whose handlers we control.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import BadRequest, CrossguardError, NotFound, PayloadTooLarge

logger = logging.getLogger(__name__)


def error_response(error: CrossguardError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers())


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "json_invalid":
        return "request body is not valid JSON", None
    where = f" at {param}" if param else ""
    return f"{first.get('msg', 'invalid request')}{where}", param


class BodySizeLimit:
    """Refuses bodies over `max_bytes` with 413, whether or not Content-Length is sent."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_large = PayloadTooLarge(
            f"request body exceeds {self.max_bytes} bytes", code="request_too_large"
        )
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await error_response(too_large)(scope, receive, send)
        seen = 0

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise StarletteHTTPException(413, too_large.message)
            return message

        await self.app(scope, counted_receive, send)


_HTTP_ERRORS = {
    404: (NotFound, "not_found"),
    405: (BadRequest, "method_not_allowed"),
    413: (PayloadTooLarge, "request_too_large"),
}


def build_openai_app(max_request_bytes: int) -> FastAPI:
    app = FastAPI(title="crossguard OpenAI-compatible API")

    @app.exception_handler(CrossguardError)
    async def _crossguard_error(request: Request, exc: CrossguardError):
        logger.info("%s %s -> %d %s", request.method, request.url.path, exc.status_code, exc.code)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return error_response(BadRequest(message, param=param, code="invalid_request"))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        cls, code = _HTTP_ERRORS.get(exc.status_code, (BadRequest, f"http_{exc.status_code}"))
        error = cls(str(exc.detail), code=code)
        return JSONResponse(error.body(), status_code=exc.status_code)

    app.add_middleware(BodySizeLimit, max_bytes=max_request_bytes)
    return app
