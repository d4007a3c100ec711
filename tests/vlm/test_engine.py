import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from service.errors import BadRequest, NotFound
from service.vlm.engine import VLMEngine
from service.vlm.messages import Message
from service.vlm.protocol import Request, SamplingParams
from tests.conftest import REPLY

GREEDY = SamplingParams(max_tokens=12, temperature=0.0)


def chat(text, image=None):
    parts = [image, text] if image is not None else [text]
    return [Message.of("user", *parts)]


def test_adapter_changes_output_and_base_is_untouched(engine):
    base = engine.generate(chat("hello there"), GREEDY)
    adapted = engine.generate(chat("hello there"), GREEDY, adapter="refuse")
    assert adapted.text.strip() == REPLY
    assert adapted.finish_reason == "stop"
    assert base.text.strip() != REPLY
    assert engine.generate(chat("hello there"), GREEDY) == base


def test_adapter_applies_to_image_prompts(engine):
    image = Image.new("RGB", (50, 70), "red")
    out = engine.generate(chat("what is in the picture ?", image), GREEDY, adapter="refuse")
    assert out.text.strip() == REPLY
    text_only = engine.generate(chat("what is in the picture ?"), GREEDY)
    with_image = engine.generate(chat("what is in the picture ?", image), GREEDY)
    assert with_image.prompt_tokens > text_only.prompt_tokens


def test_max_tokens_gives_length_finish(engine):
    out = engine.generate(chat("hello"), SamplingParams(max_tokens=3, temperature=0.0))
    assert out.completion_tokens == 3
    assert out.finish_reason == "length"


def test_min_tokens_suppresses_early_eos(engine):
    short = engine.generate(chat("hello"), GREEDY, "refuse")
    longer = engine.generate(chat("hello"), SamplingParams(max_tokens=12, min_tokens=10,
                                                           temperature=0.0), "refuse")
    assert short.completion_tokens < 10 <= longer.completion_tokens
    assert longer.text.startswith(short.text)


def test_stream_matches_generate(engine):
    whole = engine.generate(chat("tell me a story"), GREEDY)
    stream = engine.stream(chat("tell me a story"), GREEDY)
    assert "".join(d.text for d in stream) == whole.text
    assert (stream.prompt_tokens, stream.completion_tokens, stream.finish_reason) == (
        whole.prompt_tokens, whole.completion_tokens, whole.finish_reason,
    )


def test_stop_sequence_is_cut_in_generate_and_stream(engine):
    params = SamplingParams(max_tokens=12, temperature=0.0, stop=("help",))
    out = engine.generate(chat("hello"), params, adapter="refuse")
    assert out.text == " I cannot "
    assert out.finish_reason == "stop"
    stream = engine.stream(chat("hello"), params, adapter="refuse")
    assert "".join(d.text for d in stream) == " I cannot "


def test_seed_makes_sampling_reproducible(engine):
    params = SamplingParams(max_tokens=10, temperature=1.0, seed=7)
    first = engine.generate(chat("hello"), params)
    assert engine.generate(chat("hello"), params) == first
    seeds = [SamplingParams(max_tokens=10, temperature=1.0, seed=s) for s in range(4)]
    others = {engine.generate(chat("hello"), p).text for p in seeds}
    assert len(others) > 1


def test_unknown_adapter_is_not_found(engine):
    with pytest.raises(NotFound, match="unknown adapter 'nope'"):
        engine.generate(chat("hi"), GREEDY, adapter="nope")


def test_prompt_token_limit(tiny_model):
    engine = VLMEngine.from_pretrained(tiny_model, max_prompt_tokens=20)
    with pytest.raises(BadRequest, match="limit is 20"):
        engine.generate(chat("hello " * 30), GREEDY)


def test_concurrent_requests_keep_their_adapter(engine):
    """peft's active adapter is global: interleaved base/adapter calls must not leak."""
    expected = {a: engine.generate(chat("hi"), GREEDY, a).text for a in (None, "refuse")}
    choices = [None, "refuse"] * 6
    with ThreadPoolExecutor(max_workers=6) as pool:
        got = list(pool.map(lambda a: (a, engine.generate(chat("hi"), GREEDY, a).text), choices))
        streamed = list(pool.map(
            lambda a: (a, "".join(d.text for d in engine.stream(chat("hi"), GREEDY, a))),
            choices))
    assert [(a, text) for a, text in got + streamed if text != expected[a]] == []


def test_submit_many_queues_requests_in_one_step_with_the_replies_each_gets_alone(
    engine, monkeypatch,
):
    """Requests submitted together reach the decoding loop together (one `put`, so one batch)
    and decode as each does alone: greedy text and image rows, base and adapter, and a
    sampled row with its seed."""
    image = Image.new("RGB", (50, 70), "red")
    sampled = SamplingParams(max_tokens=12, temperature=1.0, seed=7)
    requests = [Request(chat("hi"), GREEDY), Request(chat("hello there"), GREEDY, "refuse"),
                Request(chat("what is in the picture ?", image), GREEDY),
                Request(chat("tell me a story"), sampled)]
    alone = [engine.generate(r.messages, r.params, r.adapter) for r in requests]
    puts = []
    put = engine.admission.put
    monkeypatch.setattr(engine.admission, "put", lambda rows: (puts.append(len(rows)),
                                                               put(rows))[1])
    submitted = engine.submit_many([replace(r, params=replace(r.params, deltas=False))
                                    for r in requests])
    assert puts == [len(requests)]
    together = []
    for streams in submitted:
        engine.wait_started(streams)
        together.append(streams[0].result())
    assert together == alone


EXIT_MID_BATCH = """
import sys
from service.vlm.engine import VLMEngine
from service.vlm.messages import Message
from service.vlm.protocol import SamplingParams

engine = VLMEngine.from_pretrained(sys.argv[1])
engine.wait_started(engine.submit([Message.of("user", "hi")],
                                  SamplingParams(max_tokens=200, min_tokens=200)))
"""


def test_a_process_may_exit_while_a_batch_decodes(tiny_model):
    """The interpreter waits for the running batch: exiting mid-batch once aborted the process
    (status 134: Python ended the decoding thread inside torch), and so did many a bench or CLI
    that exited right after its last reply."""
    done = subprocess.run([sys.executable, "-c", EXIT_MID_BATCH, str(tiny_model)],
                          cwd=Path(__file__).resolve().parents[2], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_closing_a_stream_early_frees_the_engine(engine):
    stream = engine.stream(chat("hello"), SamplingParams(max_tokens=200, temperature=0.0))
    iterator = iter(stream)
    next(iterator)
    iterator.close()
    assert engine.generate(chat("hello"), GREEDY, "refuse").text.strip() == REPLY


def test_merged_adapter_serves_only_itself(tiny_model, reply_adapter, engine):
    merged = VLMEngine.from_pretrained(tiny_model, adapters={"refuse": reply_adapter}, merge=True)
    assert merged.generate(chat("hello"), GREEDY, "refuse") == engine.generate(
        chat("hello"), GREEDY, "refuse"
    )
    with pytest.raises(NotFound, match="merged"):
        merged.generate(chat("hello"), GREEDY, None)


def test_prompt_and_completion_must_fit_the_context(engine):
    assert engine.context_length == 512
    with pytest.raises(BadRequest, match="maximum context length is 512"):
        engine.generate(chat("hello " * 200), SamplingParams(max_tokens=400))


def test_image_size_follows_processor(engine):
    assert engine.image_size == (32, 32)
