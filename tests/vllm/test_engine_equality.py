"""Both engines, one model: the same greedy requests through the torch engine and the vLLM
engine (vLLM's CPU build, `make vllm-env`) give the same replies, over real HTTP.

Two `bentoml serve` processes on the tiny LLaVA (head size 32) with the `refuse` adapter: one
`CROSSGUARD_ENGINE=torch`, one `=vllm`. Text, image, each adapter and the base model, one by one
and mixed in one concurrent burst; streamed equals whole; log-probabilities close (the engines
sum in different orders: float32 rounding, not different tokens).

On a GPU (bench/gpu_check.sh) `CROSSGUARD_TEST_MODEL` / `_ADAPTER` name a real checkpoint and
adapter and `CROSSGUARD_TEST_VLLM_ENGINE_ARGS` vLLM's settings there.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from bench.server import BentoServer
from tests.conftest import REPLY
from tests.e2e.test_openai_api import png_data_url

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]

VLLM_TEST_ENV = {
    "CROSSGUARD_ENGINE": "vllm",
    "CROSSGUARD_VLLM_ENGINE_ARGS": os.environ.get("CROSSGUARD_TEST_VLLM_ENGINE_ARGS",
                                                  json.dumps({"enforce_eager": True})),
    "VLLM_CPU_KVCACHE_SPACE": "1",
}
"""A vLLM server for tests: eager (no torch.compile warm-up: start in ~30 s, not ~60 s) and a
1 GiB KV cache (vLLM's CPU default takes most of the machine's memory)."""

TEXT = [{"role": "user", "content": "hello there"}]
IMAGE = [{"role": "user", "content": [
    {"type": "text", "text": "what is in the image ?"},
    {"type": "image_url", "image_url": {"url": png_data_url((40, 30), "red")}}]}]
CASES = [(name, messages, model) for name, messages in (("text", TEXT), ("image", IMAGE))
         for model in ("base", "refuse")]


REAL_MODEL = os.environ.get("CROSSGUARD_TEST_MODEL")


@pytest.fixture(scope="module")
def servers(tmp_path_factory, request):
    if REAL_MODEL:
        model, adapter = REAL_MODEL, os.environ["CROSSGUARD_TEST_ADAPTER"]
    else:
        model = request.getfixturevalue("tiny_model")
        adapter = request.getfixturevalue("reply_adapter")
    env = {"CROSSGUARD_MODEL": str(model), "CROSSGUARD_ADAPTERS": f"refuse={adapter}"}
    with BentoServer(env, tmp_path_factory.mktemp("torch"), timeout_s=900) as torch_server, \
            BentoServer({**env, **VLLM_TEST_ENV}, tmp_path_factory.mktemp("vllm"),
                        timeout_s=900) as vllm_server:
        yield {"torch": torch_server.url, "vllm": vllm_server.url}


def chat(url: str, messages, model: str, **extra) -> dict:
    body = {"model": model, "messages": messages, "temperature": 0, "max_tokens": 16, **extra}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def summary(reply: dict) -> tuple:
    choice = reply["choices"][0]
    return (choice["message"]["content"], choice["finish_reason"],
            reply["usage"]["prompt_tokens"], reply["usage"]["completion_tokens"])


@pytest.mark.parametrize(("name", "messages", "model"), CASES,
                         ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_one_request_gets_the_same_reply_from_both_engines(servers, name, messages, model):
    torch_reply, vllm_reply = (summary(chat(servers[e], messages, model)) for e in servers)
    assert vllm_reply == torch_reply
    if model == "refuse" and not REAL_MODEL:
        assert vllm_reply[0].strip() == REPLY


def test_a_mixed_burst_gets_the_same_replies_from_both_engines(servers):
    """16 requests at once, text and image, base and adapter interleaved: each engine batches
    them its own way (peft's mixed-adapter batch, vLLM's LoRA batch), and no reply changes."""
    burst = [CASES[i % len(CASES)] for i in range(16)]

    def replies(url):
        with ThreadPoolExecutor(len(burst)) as pool:
            return list(pool.map(lambda case: summary(chat(url, case[1], case[2])), burst))

    torch_replies, vllm_replies = replies(servers["torch"]), replies(servers["vllm"])
    assert vllm_replies == torch_replies
    assert len({r[0] for r in vllm_replies}) >= 3, "the burst must mix different replies"


def test_streamed_equals_whole_on_vllm(servers):
    whole = chat(servers["vllm"], IMAGE, "base")["choices"][0]["message"]["content"]
    pieces = []
    with httpx.stream("POST", f"{servers['vllm']}/v1/chat/completions", timeout=120, json={
            "model": "base", "messages": IMAGE, "temperature": 0, "max_tokens": 16,
            "stream": True}) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                for choice in json.loads(line[6:])["choices"]:
                    pieces.append(choice["delta"].get("content") or "")
    assert "".join(pieces) == whole and whole


def test_logprobs_are_close_between_engines(servers):
    extra = {"logprobs": True, "top_logprobs": 3, "max_tokens": 8}
    torch_lp, vllm_lp = (chat(servers[e], TEXT, "base", **extra)["choices"][0]["logprobs"]
                         ["content"] for e in servers)
    assert [t["token"] for t in vllm_lp] == [t["token"] for t in torch_lp]
    for ours, theirs in zip(torch_lp, vllm_lp, strict=True):
        assert theirs["logprob"] == pytest.approx(ours["logprob"], abs=1e-2)
        assert [t["token"] for t in theirs["top_logprobs"]] == \
            [t["token"] for t in ours["top_logprobs"]]


def test_sampled_choices_are_seeded_per_choice_on_vllm(servers):
    """`n` choices with a seed: the same request twice gives the same choices, and the choices
    differ from each other (choice i samples with seed + i, as on the torch engine)."""
    extra = {"temperature": 1.0, "seed": 7, "n": 3, "max_tokens": 8}
    first, again = ([c["message"]["content"] for c in chat(servers["vllm"], TEXT, "base",
                                                            **extra)["choices"]]
                    for _ in range(2))
    assert first == again and len(set(first)) == 3
