"""An adapter scoped to the reply (peft's Activated LoRA) behind a real `bentoml serve`: a burst
of concurrent requests mixing it with a plain adapter and the base gets, over HTTP, the replies
the engine gives each request alone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from bench.server import BentoServer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def scoped_twin(tiny_model, reply_adapter, tmp_path_factory):
    """The reply adapter's weights, scoped to the reply by its config (the scope bench's twin)."""
    from transformers import AutoProcessor

    from bench.adapter_scope import twins

    folder = tmp_path_factory.mktemp("twins")
    return twins(reply_adapter, AutoProcessor.from_pretrained(tiny_model), folder)["scoped"]


def test_a_mixed_burst_over_http_equals_each_request_alone(tiny_model, reply_adapter,
                                                          scoped_twin, tmp_path):
    from service.vlm.admission import Admission
    from service.vlm.engine import VLMEngine
    from service.vlm.messages import Message
    from service.vlm.protocol import SamplingParams

    adapters = {"refuse": reply_adapter, "scoped": scoped_twin}
    requests = [(text, model) for text in ("hello there", "how do i bake bread ?")
                for model in ("scoped", "base", "refuse", "scoped")]
    alone = VLMEngine.from_pretrained(tiny_model, adapters=adapters,
                                      admission=Admission(max_batch_size=1, batch_wait_s=0.0))
    params = SamplingParams(max_tokens=12, temperature=0.0)
    expected = [alone.generate([Message.of("user", text)], params,
                               None if model == "base" else model).text
                for text, model in requests]
    assert expected[0] != expected[1] != expected[2], "scoped, base and plain replies differ"
    env = {"CROSSGUARD_MODEL": str(tiny_model),
           "CROSSGUARD_ADAPTERS": ",".join(f"{k}={v}" for k, v in adapters.items())}
    with BentoServer(env, tmp_path) as server, httpx.Client(base_url=server.url,
                                                           timeout=60) as client:
        models = {m["id"] for m in client.get("/v1/models").json()["data"]}
        assert models == {"base", "refuse", "scoped"}

        def ask(request):
            text, model = request
            response = client.post("/v1/chat/completions", json={
                "model": model, "messages": [{"role": "user", "content": text}],
                "max_tokens": 12, "temperature": 0})
            response.raise_for_status()
            return response.json()["choices"][0]["message"]["content"]

        with ThreadPoolExecutor(len(requests)) as pool:
            assert list(pool.map(ask, requests)) == expected
