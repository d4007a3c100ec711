"""BentoML's request timeout, patched by `service.traffic`: it no longer keeps each request's
state alive for `traffic.timeout` seconds, and still answers 504 when no response starts."""

import asyncio
import contextvars
import gc
import importlib.util
import weakref

import pytest
from bentoml._internal.server.http.traffic import TimeoutMiddleware

from service import traffic

REQUEST_STATE = contextvars.ContextVar("request_state")


class State:
    """Stands for what BentoML and OpenTelemetry keep in a request's context."""


def bentoml_original() -> type:
    """An untouched copy of BentoML's middleware class (the patch changes the imported one)."""
    spec = importlib.util.find_spec("bentoml._internal.server.http.traffic")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TimeoutMiddleware


async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def serve(middleware_class, inner, requests: int, timeout: float = 600):
    """Run `requests` requests, each with its own state in a context variable, as uvicorn
    would (one task per request); returns weak references to the states and the sent
    messages."""
    middleware = middleware_class(inner, timeout=timeout)
    states, sent = [], []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    async def one():
        state = State()
        states.append(weakref.ref(state))
        REQUEST_STATE.set(state)
        await middleware({"type": "http"}, receive, send)

    for _ in range(requests):
        await asyncio.create_task(one())
    await asyncio.sleep(0)
    gc.collect()
    return states, sent


def test_bentoml_keeps_every_requests_state_until_the_timeout():
    """Upstream's behaviour, the reason for the patch: if this fails, BentoML fixed it and
    `service/traffic.py` can go."""

    async def alive_after_requests():  # inside the loop: closing it drops the timers
        states, _ = await serve(bentoml_original(), app, 20)
        return sum(ref() is not None for ref in states)

    assert asyncio.run(alive_after_requests()) == 20


def test_patched_timeout_keeps_nothing_of_finished_requests():
    traffic.patch()

    async def alive_after_requests():
        states, sent = await serve(TimeoutMiddleware, app, 20)
        pending = [h for h in asyncio.get_running_loop()._scheduled if not h.cancelled()]
        return sum(ref() is not None for ref in states), len(sent), pending

    alive, sent, pending = asyncio.run(alive_after_requests())
    assert (alive, sent, pending) == (0, 40, [])


@pytest.mark.parametrize("original", [False, True])
def test_a_request_without_a_response_still_gets_504(original):
    traffic.patch()
    middleware_class = bentoml_original() if original else TimeoutMiddleware

    async def stuck(scope, receive, send):
        await asyncio.sleep(60)

    _, sent = asyncio.run(serve(middleware_class, stuck, 1, timeout=0.05))
    assert sent[0]["status"] == 504
    assert b"Not able to process the request in 0.05 seconds" in sent[1]["body"]
