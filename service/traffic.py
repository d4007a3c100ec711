"""A fix for BentoML's request timeout, which kept every request's state alive for 10 minutes.

BentoML's `TimeoutMiddleware` (bentoml 1.4.40, `bentoml/_internal/server/http/traffic.py`)
schedules `loop.call_later(traffic.timeout, ...)` for every HTTP request and never cancels it.
Each pending timer holds a copy of the request's context variables (the OpenTelemetry span tree,
BentoML's request state), so a worker keeps the state of every request of the last
`traffic.timeout` seconds (600 here) and grows with the request rate until then (README
"Benchmarks", soak, has what that cost before this patch). Even `GET /livez` grows it. BentoML
offers no setting to turn the middleware off (`traffic.timeout` must be > 0), so `patch()`
replaces its `__call__` by one that behaves the same (504 when no response has started after
`timeout` seconds) but schedules the timer outside the request's context and cancels it when the
request ends. tests/service/test_traffic.py fails on BentoML's original, so an upgrade that
fixes it upstream shows up there and this module can go.
"""

from __future__ import annotations

import asyncio
import contextvars

from bentoml._internal.server.http.traffic import TimeoutMiddleware
from starlette.responses import JSONResponse


async def _call(self: TimeoutMiddleware, scope, receive, send) -> None:
    if scope["type"] not in ("http", "websocket"):
        return await self.app(scope, receive, send)
    loop = asyncio.get_running_loop()
    started = loop.create_future()
    timer = loop.call_later(self.timeout, self._set_timer_out, started,
                            context=contextvars.Context())

    async def send_marking_start(message) -> None:
        if not started.done():
            started.set_result(None)
        await send(message)

    app = asyncio.ensure_future(self.app(scope, receive, send_marking_start))
    try:
        await started
    except TimeoutError:
        if app.cancel():
            error = {"error": f"Not able to process the request in {self.timeout} seconds"}
            await JSONResponse(error, status_code=504)(scope, receive, send)
    else:
        await app
    finally:
        timer.cancel()


def patch() -> None:
    """Install the fix; BentoML builds its middleware stack after the service module is
    imported, so `service/app.py` calls this at import."""
    TimeoutMiddleware.__call__ = _call
