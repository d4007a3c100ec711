"""The engine contract: what the API, probes, evaluation and benches ask of any generation engine.

Two engines implement it: the torch engine (`service.vlm.engine`, any Hugging Face VLM, CPU or
GPU) and the vLLM engine (`service.vlm.vllm_engine`, vLLM's `AsyncLLM` with one `LoRARequest`
per adapter), chosen by `CROSSGUARD_ENGINE`. Code above this module asks an engine only what
`Engine` declares (tests/vlm/test_seam.py walks the tree for anything else). Nothing here imports
torch.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from service.errors import BadRequest, CrossguardError
from service.vlm.messages import Message


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings of one request (vLLM's names and meanings).

    `max_tokens=None` means "up to the context the prompt leaves", capped by the engine's
    default. `temperature=None` keeps the model's own generation config. `n` choices are
    generated as rows of one batch; choice `i` samples with `seed + i`. `deltas=False` (vLLM's
    `FINAL_ONLY` output kind) delivers each choice whole when it ends: the engine then need not
    detokenise every row at every step (what that costs a batch: README "Benchmarks").
    """

    max_tokens: int | None = None
    min_tokens: int = 0
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1
    logprobs: int | None = None
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    deltas: bool = True


@dataclass(frozen=True)
class TokenScore:
    """One generated token with its log-probability under the model (before penalties, bias
    and temperature, as vLLM's default `raw_logprobs`) and the most likely alternatives."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Request:
    """One request of several queued together (`Engine.submit_many`)."""

    messages: Sequence[Message]
    params: SamplingParams
    adapter: str | None = None


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    logprobs: tuple[TokenScore, ...] | None = None


@dataclass(frozen=True)
class Delta:
    """A piece of streamed text and the tokens that produced it."""

    text: str
    logprobs: tuple[TokenScore, ...] = ()


class Stream:
    """One choice being generated. The engine pushes deltas into it from its decoding thread;
    the consumer iterates them. `cancel()` (client gone) stops this choice only.

    After the iterator is exhausted, `text`, `completion_tokens`, `finish_reason` and `logprobs`
    describe the whole choice; an error of the engine is re-raised in the consumer's thread.
    """

    def __init__(self, prompt_tokens: int, index: int = 0, want_logprobs: bool = False):
        self.prompt_tokens = prompt_tokens
        self.index = index
        self.completion_tokens = 0
        self.text = ""
        self.finish_reason: str | None = None
        self.logprobs: list[TokenScore] | None = [] if want_logprobs else None
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._started = threading.Event()
        self._cancelled = threading.Event()
        self._error: BaseException | None = None

    # -- engine side --------------------------------------------------------------------------
    def started(self) -> None:
        self._started.set()

    def push(self, delta: Delta) -> None:
        self._events.put(delta)

    def finish(self, reason: str, completion_tokens: int) -> None:
        self._events.put((reason, completion_tokens))
        self._started.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._events.put(error)
        self._started.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    # -- consumer side ------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop generating this choice at the next token (the client went away)."""
        self._cancelled.set()

    def wait_started(self, timeout_s: float | None = None) -> bool:
        """Block until the choice is decoding (True), or `timeout_s` passed (False). Errors of
        the engine before decoding (an unloaded adapter) are raised here, before any response
        header is sent."""
        started = self._started.wait(timeout_s)
        if self._error is not None:
            raise self._error
        return started

    def __iter__(self) -> Iterator[Delta]:
        """Deltas until the choice ends; closing the iterator early cancels the choice."""
        try:
            while True:
                event = self._events.get()
                if isinstance(event, BaseException):
                    raise event
                if isinstance(event, tuple):
                    self.finish_reason, self.completion_tokens = event
                    return
                self.text += event.text
                if self.logprobs is not None:
                    self.logprobs.extend(event.logprobs)
                yield event
        finally:
            if self.finish_reason is None:
                self.cancel()

    def result(self) -> Generation:
        """Wait for the whole choice."""
        for _ in self:
            pass
        logprobs = None if self.logprobs is None else tuple(self.logprobs)
        return Generation(self.text, self.prompt_tokens, self.completion_tokens,
                          self.finish_reason, logprobs)


LOGPROB_FLOOR = -9999.0
"""The lowest log-probability reported: JSON has no -inf, and vLLM reports impossible tokens
with this value too."""


def check_logit_bias(logit_bias: Mapping[int, float], vocab_size: int) -> None:
    """400 when `logit_bias` names a token id the model does not have."""
    if any(not 0 <= token < vocab_size for token in logit_bias):
        raise BadRequest(f"logit_bias names a token id outside the vocabulary "
                         f"(0-{vocab_size - 1})", param="logit_bias", code="invalid_request")


def completion_budget(prompt_tokens: int, max_tokens: int | None, context: int | None,
                      default_max_tokens: int) -> int:
    """The completion's token budget: `max_tokens`, or when the request gives none what the
    context leaves, capped by `default_max_tokens` (vLLM's rule). 400 when it does not fit."""
    left = None if context is None else context - prompt_tokens
    if max_tokens is None:
        max_tokens = default_max_tokens if left is None else min(default_max_tokens, left)
    if left is not None and (left < 1 or max_tokens > left):
        raise BadRequest(
            f"this model's maximum context length is {context} tokens; the request needs "
            f"{prompt_tokens + max(max_tokens, 1)} ({prompt_tokens} in the messages, images "
            f"included, {max(max_tokens, 1)} for the completion)",
            param="messages", code="context_length_exceeded",
        )
    return max_tokens


def wait_until_decoding(streams: list[Stream], timeout_s: float,
                        timed_out: Callable[[], CrossguardError]) -> None:
    """Wait until every choice of a request decodes; past `timeout_s` raise `timed_out()` (the
    503). On any error the request's choices are cancelled, so the engine drops them."""
    deadline = time.monotonic() + timeout_s
    try:
        if not all(s.wait_started(max(0.0, deadline - time.monotonic())) for s in streams):
            raise timed_out()
    except CrossguardError:
        for stream in streams:
            stream.cancel()
        raise


@dataclass(frozen=True)
class WhiteBox:
    """The torch model and processor behind an engine, for probes that follow gradients
    (`service.probes.adversarial`)."""

    model: object
    processor: object


class Engine(Protocol):
    """What `service.runtime`, the probes, `unlearning eval` and the benches use; `adapter=None`
    is the base model."""

    base_model_id: str
    merged: str | None
    context_length: int | None

    @property
    def adapter_names(self) -> list[str]: ...

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the images the vision tower sees."""

    @property
    def patch_size(self) -> int | None:
        """Pixels per side of a vision patch (None when the model does not say)."""

    @property
    def vocab_size(self) -> int:
        """Token ids `logit_bias` may name: 0 to `vocab_size - 1`."""

    def white_box(self) -> WhiteBox | None:
        """The torch model behind the engine, or None when it has none to differentiate (vLLM):
        white-box probes then report themselves unsupported."""

    @property
    def busy(self) -> bool:
        """Requests are running or waiting (probe runs give way)."""

    def submit(self, messages: Sequence[Message], params: SamplingParams,
               adapter: str | None = None) -> list[Stream]:
        """Queue one request; one stream per choice (`params.n`)."""

    def submit_many(self, requests: Sequence[Request]) -> list[list[Stream]]:
        """Queue several requests at once, the streams of each in order; they reach the
        decoding loop together (one batch, as far as its size allows). A 429 refuses them
        all."""

    def wait_started(self, streams: list[Stream]) -> None:
        """Block until the request decodes; queue errors (503 after the queue timeout) raise
        here, before a streamed response has sent its headers."""

    def generate(self, messages: Sequence[Message], params: SamplingParams,
                 adapter: str | None = None) -> Generation:
        """Submit and wait for the only choice (`params.n` must be 1)."""

    def add_adapter(self, name: str, path: str | Path): ...

    def remove_adapter(self, name: str) -> None: ...

    def merge(self, name: str | None) -> None:
        """Fold the only adapter into the weights (ValueError where the engine cannot)."""
