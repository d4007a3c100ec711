"""Hostile requests get a 4xx with an OpenAI error body, and the service keeps answering."""

import base64
import io

import httpx
import pytest
from PIL import Image

from tests.conftest import REPLY

pytestmark = pytest.mark.e2e


def b64(raw: bytes, mime="png") -> str:
    return f"data:image/{mime};base64," + base64.b64encode(raw).decode()


def png(size, mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


def image_message(*urls):
    parts = [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, *parts]}]}


def user(text="hi", **extra):
    return {"messages": [{"role": "user", "content": text}], **extra}


HOSTILE = [
    ("malformed json", b'{"messages": [', 400, "invalid_request"),
    ("not an object", b"[1, 2, 3]", 400, "invalid_request"),
    ("empty body", b"", 400, "invalid_request"),
    ("no messages", {"model": "base"}, 400, "invalid_request"),
    ("empty messages", {"messages": []}, 400, "invalid_request"),
    ("wrong type", {"messages": "hello"}, 400, "invalid_request"),
    ("bad role", {"messages": [{"role": "wizard", "content": "x"}]}, 400, "invalid_request"),
    ("bad part type", {"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, 400,
     "invalid_request"),
    ("temperature out of range", user(temperature=9), 400, "invalid_request"),
    ("max_tokens zero", user(max_tokens=0), 400, "invalid_request"),
    ("max_tokens over cap", user(max_tokens=10_000), 400, "max_tokens_exceeded"),
    ("n over the batch size", user(n=17), 400, "invalid_request"),
    ("n zero", user(n=0), 400, "invalid_request"),
    ("top_logprobs without logprobs", user(top_logprobs=2), 400, "invalid_request"),
    ("top_logprobs over 20", user(logprobs=True, top_logprobs=21), 400, "invalid_request"),
    ("logit_bias key not an id", user(logit_bias={"cat": 1}), 400, "invalid_request"),
    ("logit_bias over 100", user(logit_bias={"5": 101}), 400, "invalid_request"),
    ("penalty over 2", user(presence_penalty=2.5), 400, "invalid_request"),
    ("stream_options without stream", user(stream_options={"include_usage": True}), 400,
     "invalid_request"),
    ("tools", user(tools=[{"type": "function"}]), 400, "unsupported_parameter"),
    ("seed beyond int64", user(seed=2**70), 400, "invalid_request"),
    ("unknown adapter", user(model="does-not-exist"), 404, "model_not_found"),
    ("bad base64", image_message("data:image/png;base64,!!!!"), 400, "invalid_base64"),
    ("not an image", image_message(b64(b"plain text, not a picture")), 400, "invalid_image"),
    ("truncated png", image_message(b64(png((64, 64))[:40])), 400, "invalid_image"),
    ("svg", image_message("data:image/svg+xml;base64,PHN2Zz4="), 400, "unsupported_image_type"),
    ("bomb image", image_message(b64(png((8000, 8000), "1"))), 413, "image_too_many_pixels"),
    ("oversized image", image_message(b64(b"\0" * 1_200_000)), 413, "image_too_large"),
    ("too many images", image_message(*[b64(png((8, 8)))] * 3), 400, "too_many_images"),
    ("remote url", image_message("http://169.254.169.254/latest/meta-data"), 400,
     "remote_image_refused"),
    ("huge body", user("x" * 3_000_000), 413, "request_too_large"),
    ("huge chunked body", (b'{"messages": "', b"x" * 3_000_000, b'"}'), 413,
     "request_too_large"),
    ("prompt too long", user("hello " * 3000), 400, "context_length_exceeded"),
]


def post(server, body):
    """Dicts as JSON, bytes as they are, tuples of chunks chunked (no Content-Length)."""
    url = f"{server.url}/v1/chat/completions"
    if isinstance(body, dict):
        return httpx.post(url, json=body, timeout=60)
    content = iter(body) if isinstance(body, tuple) else body
    return httpx.post(url, content=content, headers={"content-type": "application/json"},
                      timeout=60)


@pytest.mark.parametrize("name,body,status,code", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_request_gets_openai_error(server, name, body, status, code):
    response = post(server, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["message"]


def test_service_still_answers_after_the_batch(server):
    for _, body, status, _ in HOSTILE:
        assert post(server, body).status_code == status
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    ok = httpx.post(f"{server.url}/v1/chat/completions", json=user(model="refuse", temperature=0))
    assert ok.status_code == 200
    assert ok.json()["choices"][0]["message"]["content"].strip() == REPLY

