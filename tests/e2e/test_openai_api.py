"""The unmodified `openai` client against a real `bentoml serve`."""

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from tests.conftest import REPLY

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def png_data_url(size=(48, 48), color="green") -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def ask(client, content, model="base", **kwargs):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], temperature=0, **kwargs
    )


def test_models_list_shows_base_and_adapter_with_parent(client):
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"base", "refuse"}
    assert models["refuse"].model_extra["parent"] == "base"


def test_text_chat_with_usage(client):
    out = ask(client, "hello there", max_tokens=5)
    assert out.object == "chat.completion" and out.model == "base"
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 5
    assert out.usage.total_tokens == out.usage.prompt_tokens + 5


def test_adapter_selected_by_model_changes_the_answer(client):
    base = ask(client, "hello there").choices[0].message.content
    adapted = ask(client, "hello there", model="refuse").choices[0].message.content
    assert adapted.strip() == REPLY and base.strip() != REPLY


def test_image_chat_with_base64_png(client):
    content = [{"type": "text", "text": "what is in the image ?"},
               {"type": "image_url", "image_url": {"url": png_data_url()}}]
    out = ask(client, content, model="refuse")
    assert out.choices[0].message.content.strip() == REPLY
    text_only = ask(client, "what is in the image ?")
    assert out.usage.prompt_tokens > text_only.usage.prompt_tokens


def test_streamed_chat_equals_whole_answer(client):
    whole = ask(client, "tell me a story", max_tokens=12)
    chunks = list(ask(client, "tell me a story", max_tokens=12, stream=True,
                      stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    finish = [f for f in finish if f]
    assert finish == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_stream_is_sse_ending_with_done(server):
    body = {"messages": [{"role": "user", "content": "hi"}], "model": "refuse", "stream": True,
            "temperature": 0}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"


def test_stop_sequence(client):
    out = ask(client, "hello", model="refuse", stop=["help"])
    assert out.choices[0].message.content == " I cannot "
    assert out.choices[0].finish_reason == "stop"
