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


def test_request_without_max_tokens_gets_the_default_budget(client):
    out = ask(client, "hello there", extra_body={"min_tokens": 16})
    assert out.usage.completion_tokens == 16  # CROSSGUARD_DEFAULT_MAX_TOKENS in this server
    assert out.choices[0].finish_reason == "length"


def test_n_choices_with_a_seed_differ_and_repeat(client):
    def sample():
        return client.chat.completions.create(
            model="base", messages=[{"role": "user", "content": "hello there"}], n=2,
            temperature=1.0, seed=3, max_tokens=8, extra_body={"min_tokens": 8})

    first, again = sample(), sample()
    texts = [c.message.content for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1] and texts[0] != texts[1]
    assert [c.message.content for c in again.choices] == texts
    assert first.usage.completion_tokens == 16


def test_n_choices_stream_with_their_index(client):
    chunks = list(client.chat.completions.create(
        model="base", messages=[{"role": "user", "content": "hello there"}], n=2,
        temperature=1.0, seed=3, max_tokens=8, stream=True))
    whole = client.chat.completions.create(
        model="base", messages=[{"role": "user", "content": "hello there"}], n=2,
        temperature=1.0, seed=3, max_tokens=8)
    streamed = ["".join(c.choices[0].delta.content or "" for c in chunks
                        if c.choices and c.choices[0].index == i) for i in (0, 1)]
    assert streamed == [c.message.content for c in whole.choices]


def test_logprobs_and_top_logprobs(client):
    out = ask(client, "hello there", max_tokens=6, logprobs=True, top_logprobs=2)
    content = out.choices[0].logprobs.content
    assert len(content) == 6
    assert "".join(t.token for t in content) == out.choices[0].message.content
    for token in content:
        assert len(token.top_logprobs) == 2 and token.logprob <= 0
        assert token.top_logprobs[0].token == token.token  # greedy picks the likeliest
        assert token.bytes == list(token.token.encode())
    assert ask(client, "hello there", max_tokens=2).choices[0].logprobs is None


def test_logprobs_stream_with_their_tokens(client):
    chunks = list(ask(client, "hello there", max_tokens=6, logprobs=True, stream=True))
    tokens = [t for c in chunks if c.choices and c.choices[0].logprobs
              for t in c.choices[0].logprobs.content]
    assert len(tokens) == 6
    assert "".join(t.token for t in tokens) == "".join(
        c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_logit_bias_is_honoured(server):
    def tokens(**extra):
        body = {"messages": [{"role": "user", "content": "hello there"}], "model": "base",
                "max_tokens": 4, "temperature": 0, "logprobs": True, **extra}
        response = httpx.post(f"{server.url}/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        return [t["token"] for t in response.json()["choices"][0]["logprobs"]["content"]]

    plain = tokens()
    forced = tokens(logit_bias={"300": 100})
    assert len(set(forced)) == 1 and forced != plain
    outside = httpx.post(f"{server.url}/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}], "logit_bias": {"999999999": 5}})
    assert outside.status_code == 400 and outside.json()["error"]["param"] == "logit_bias"


@pytest.mark.parametrize("param, value", [
    ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
    ("response_format", {"type": "json_object"}),
    ("audio", {"voice": "alloy", "format": "wav"}),
    ("modalities", ["text", "audio"]),
    ("store", True),
])
def test_unsupported_parameter_gets_400_naming_it(server, param, value):
    response = httpx.post(f"{server.url}/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, param: value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and param in error["message"]
    assert error["code"] == "unsupported_parameter"


def test_default_values_of_unsupported_parameters_and_unknown_fields_are_accepted(server):
    response = httpx.post(f"{server.url}/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "tools": [],
        "response_format": {"type": "text"}, "store": False, "not_an_openai_field": 1})
    assert response.status_code == 200
    assert "ignoring request field 'not_an_openai_field'" in server.log(tail=None)
