"""Batched decoding: every row of a batch gets what it would get alone, with its own settings."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace

import pytest
import torch
from PIL import Image

from service.errors import BadRequest, NotReady
from service.vlm.admission import Admission
from service.vlm.engine import VLMEngine
from service.vlm.messages import Message
from service.vlm.prompts import encode
from service.vlm.protocol import SamplingParams
from tests.conftest import REPLY

GREEDY = SamplingParams(max_tokens=12, temperature=0.0)


def chat(text, image=None):
    parts = [image, text] if image is not None else [text]
    return [Message.of("user", *parts)]


def image(color):
    return Image.new("RGB", (40, 40), color)


class RecordingAdmission(Admission):
    """Records the size of every batch the engine takes; `expect(n)` makes the next batch wait
    for n rows (as it does for the clients of a batch of n)."""

    def __init__(self, **options):
        super().__init__(**options)
        self.sizes: list[int] = []

    def expect(self, rows: int) -> None:
        with self._changed:  # after the last batch has ended, which sets its own expectation
            self._changed.wait_for(lambda: not self._batch)
            self._in_flight = rows

    def take(self):
        rows = super().take()
        self.sizes.append(len(rows))
        return rows


@pytest.fixture(scope="module")
def batched(tiny_model, reply_adapter):
    """An engine that collects for long enough that requests submitted together share a batch."""
    engine = VLMEngine.from_pretrained(
        tiny_model, adapters={"refuse": reply_adapter},
        admission=RecordingAdmission(max_batch_size=16, batch_wait_s=0.5),
    )
    engine.batch_sizes = engine.admission.sizes
    return engine


@pytest.fixture(scope="module")
def alone(tiny_model, reply_adapter):
    return VLMEngine.from_pretrained(
        tiny_model, adapters={"refuse": reply_adapter},
        admission=Admission(max_batch_size=1, batch_wait_s=0.0),
    )


def together(engine, requests):
    """Submit every (messages, params, adapter) at once; wait for all first choices."""
    engine.batch_sizes.clear()
    engine.admission.expect(len(requests))
    streams = [engine.submit(*r)[0] for r in requests]
    results = [s.result() for s in streams]
    assert engine.batch_sizes == [len(requests)], "the requests did not share one batch"
    return results


MIXED = [
    (chat("hello there"), GREEDY, None),
    (chat("hello there"), GREEDY, "refuse"),
    (chat("what is in the picture ?", image("red")), GREEDY, None),
    (chat("what is in the picture ?", image("blue")), GREEDY, "refuse"),
    (chat("a much longer question with many more words in it"), GREEDY, None),
    (chat("short", image("green")), GREEDY, None),
]


def test_batched_greedy_equals_unbatched_for_mixed_adapters_and_modalities(batched, alone):
    got = together(batched, MIXED)
    expected = [alone.generate(*r) for r in MIXED]
    assert got == expected
    assert got[1].text.strip() == REPLY and got[0].text != got[1].text


def test_each_row_keeps_its_max_tokens_and_stop_sequences(batched, alone):
    base = alone.generate(chat("hello there"), SamplingParams(max_tokens=16, temperature=0.0))
    stop = base.text.split()[2]
    requests = [
        (chat("hello there"), SamplingParams(max_tokens=3, temperature=0.0), None),
        (chat("hello there"), SamplingParams(max_tokens=16, temperature=0.0, stop=(stop,)), None),
        (chat("hello there"), SamplingParams(max_tokens=16, temperature=0.0), None),
        (chat("hello there"), SamplingParams(max_tokens=16, temperature=0.0, stop=("help",)),
         "refuse"),
    ]
    short, stopped, whole, refusal = together(batched, requests)
    assert (short.completion_tokens, short.finish_reason) == (3, "length")
    assert stopped.text == base.text[: base.text.index(stop)] and stopped.finish_reason == "stop"
    assert whole == base
    assert refusal.text == " I cannot " and refusal.finish_reason == "stop"


def test_whole_replies_equal_streamed_ones_and_arrive_in_one_piece(batched):
    """`deltas=False` rows skip detokenising at every step; their text, stops, finish reasons
    and logprobs are those of streamed rows, in the same batch."""
    settings = [SamplingParams(max_tokens=16, temperature=0.0, logprobs=2),
                SamplingParams(max_tokens=16, temperature=0.0, stop=("help",)),
                SamplingParams(max_tokens=5, min_tokens=5, temperature=0.0)]
    requests = [(chat("hello there"), params, adapter) for params in settings
                for adapter in (None, "refuse")]
    batched.batch_sizes.clear()
    batched.admission.expect(2 * len(requests))
    streamed = [batched.submit(*r)[0] for r in requests]
    whole = [batched.submit(m, replace(p, deltas=False), a)[0] for m, p, a in requests]
    streamed_pieces, whole_pieces = [list(s) for s in streamed], [list(s) for s in whole]

    def outcome(stream):
        return stream.text, stream.completion_tokens, stream.finish_reason, stream.logprobs

    assert [outcome(s) for s in whole] == [outcome(s) for s in streamed]
    assert batched.batch_sizes == [2 * len(requests)]
    assert all(len(p) <= 1 for p in whole_pieces)
    assert max(len(p) for p in streamed_pieces) > 1
    assert {s.finish_reason for s in whole} == {"length", "stop"}
    assert whole[0].logprobs and all(s.text for s in whole)


def test_sampled_row_matches_generate_with_its_seed_alone_and_in_a_batch(batched, tiny_model):
    params = SamplingParams(max_tokens=10, temperature=0.9, top_p=0.8, seed=11)
    engine_alone = batched
    model, processor = engine_alone.model, engine_alone.processor
    inputs = encode(processor, chat("hello there"))
    torch.manual_seed(11)
    with torch.inference_mode(), model.disable_adapter():
        reference = model.generate(**inputs, do_sample=True, temperature=0.9, top_p=0.8,
                                   max_new_tokens=10, pad_token_id=processor.tokenizer.eos_token_id)
    expected = processor.tokenizer.decode(reference[0, inputs["input_ids"].shape[1]:],
                                          skip_special_tokens=True)
    sampled, *_ = together(batched, [(chat("hello there"), params, None), *MIXED[1:4]])
    assert sampled.text == expected


def test_n_choices_decode_as_rows_with_consecutive_seeds(batched):
    params = SamplingParams(max_tokens=10, temperature=1.0, seed=5, n=3)
    batched.admission.expect(3)
    streams = batched.submit(chat("hello there"), params)
    choices = [s.result() for s in streams]
    assert [s.index for s in streams] == [0, 1, 2]
    assert len({c.text for c in choices}) == 3
    single = [batched.generate(chat("hello there"),
                               SamplingParams(max_tokens=10, temperature=1.0, seed=5 + i))
              for i in range(3)]
    assert [c.text for c in choices] == [s.text for s in single]


def test_cancelling_one_stream_stops_its_row_only(batched):
    long = SamplingParams(max_tokens=200, min_tokens=200, temperature=0.0)
    batched.batch_sizes.clear()
    batched.admission.expect(2)
    gone = batched.submit(chat("hello there"), long)[0]
    stays = batched.submit(chat("tell me more"), long)[0]
    deltas = iter(gone)
    next(deltas)
    deltas.close()  # the client went away
    kept = stays.result()
    assert kept.completion_tokens == 200
    assert batched.batch_sizes == [2]
    assert gone.finish_reason is None and gone.completion_tokens == 0


def test_logprobs_are_the_models_and_the_greedy_token_is_the_top_one(batched):
    params = SamplingParams(max_tokens=8, temperature=0.0, logprobs=3)
    out = batched.generate(chat("hello there"), params)
    assert len(out.logprobs) == out.completion_tokens == 8
    for entry in out.logprobs:
        assert len(entry.top) == 3 and entry.logprob <= 0
        assert entry.top[0] == (entry.token, entry.logprob)
        assert entry.top[0][1] >= entry.top[1][1] >= entry.top[2][1]
    assert "".join(e.token for e in out.logprobs) == out.text
    assert batched.generate(chat("hello there"), GREEDY).logprobs is None


def test_logit_bias_forces_a_token(batched):
    tokenizer = batched.tokenizer
    token = tokenizer.convert_tokens_to_ids(tokenizer.tokenize("cat")[0])
    out = batched.generate(chat("hello there"),
                           SamplingParams(max_tokens=5, temperature=0.0, logit_bias={token: 100}))
    assert out.text == tokenizer.decode([token] * 5)
    with pytest.raises(BadRequest, match="logit_bias"):
        batched.generate(chat("hi"), SamplingParams(max_tokens=2, logit_bias={10**9: 1.0}))


def test_presence_and_frequency_penalties_reduce_repetition(batched):
    def repeats(**penalty):
        params = SamplingParams(max_tokens=40, min_tokens=40, temperature=0.0, **penalty)
        text = batched.generate(chat("what is two plus two ?"), params).text
        ids = batched.tokenizer(text, add_special_tokens=False)["input_ids"]
        return sum(c - 1 for c in Counter(ids).values())

    plain = repeats()
    assert plain > 5, "precondition: the tiny model repeats itself when greedy"
    assert repeats(presence_penalty=2.0) < plain
    assert repeats(frequency_penalty=2.0) < plain
    assert repeats(frequency_penalty=-2.0) >= plain


def test_without_max_tokens_the_reply_may_fill_the_context(tiny_model):
    engine = VLMEngine.from_pretrained(tiny_model, default_max_tokens=10_000)
    prompt = chat("hello " * 150)
    params = SamplingParams(min_tokens=10_000, temperature=0.0)
    out = engine.generate(prompt, params)
    assert out.prompt_tokens + out.completion_tokens == engine.context_length
    assert out.finish_reason == "length"
    capped = VLMEngine.from_pretrained(tiny_model, default_max_tokens=7)
    assert capped.generate(prompt, SamplingParams(temperature=0.0, min_tokens=7)) \
        .completion_tokens == 7
    with pytest.raises(BadRequest, match="maximum context length"):
        engine.generate(chat("hello " * 600), SamplingParams())


def test_a_mixed_batch_never_switches_the_adapter_globally(batched, alone, monkeypatch):
    """peft's global switches (`set_adapter`, `disable_adapter`) would serve every row of a
    mixed batch with one adapter; only per-row dispatch may be used (this once depended on the
    order in which Python iterated a set, so it passed or failed by process)."""
    calls = []
    model = batched.model
    monkeypatch.setattr(model, "set_adapter", lambda *a, **k: calls.append("set_adapter"))
    monkeypatch.setattr(model, "disable_adapter", lambda: calls.append("disable_adapter"))
    requests = [(chat("hi"), GREEDY, None), (chat("hi"), GREEDY, "refuse")]
    assert together(batched, requests) == [alone.generate(*r) for r in requests]
    assert calls == []


def test_waiting_too_long_gives_503_with_retry_after_and_withdraws_the_request(tiny_model):
    engine = VLMEngine.from_pretrained(
        tiny_model, admission=Admission(wait_timeout_s=0.05, batch_wait_s=0.0))
    with engine._model_lock:  # decoding is held up: the first request is taken, the next waits
        first = engine.submit(chat("hello"), GREEDY)[0]
        late = engine.submit(chat("hello"), GREEDY)
        with pytest.raises(NotReady, match="waited") as timed_out:
            engine.wait_started(late)
    assert timed_out.value.status_code == 503 and "Retry-After" in timed_out.value.headers()
    assert late[0].cancelled
    assert first.result().completion_tokens >= 1
    deadline = time.monotonic() + 5
    while engine.busy:  # the withdrawn request is dropped, never decoded
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert late[0].finish_reason is None and late[0].completion_tokens == 0
