"""The generation engine: one VLM, its adapters, and thread-safe generate/stream calls.

peft's active adapter is global model state, so choosing the adapter and generating happen
under one lock: a worker runs one generation at a time, and concurrency comes from BentoML
workers and replicas. Requests queue on the lock in arrival order.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from service.errors import BadRequest, NotFound
from service.vlm.adapters import AdapterInfo, attach_adapters
from service.vlm.loading import load_vlm
from service.vlm.messages import Message
from service.vlm.prompts import encode
from service.vlm.stops import StopStream, cut_at_stop

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings; `None` keeps the model's own generation config (as vLLM does)."""

    max_tokens: int = 128
    min_tokens: int = 0
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class _Halt(StoppingCriteria):
    """Stops generation when an event is set (client gone, stop sequence seen by the stream)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), device=input_ids.device)


class _StopOnText(StoppingCriteria):
    """Stops when a stop sequence appears in the decoded tail of the new tokens."""

    def __init__(self, tokenizer, prompt_len: int, stops: tuple[str, ...]):
        self.tokenizer, self.prompt_len, self.stops = tokenizer, prompt_len, stops
        self.window = max(len(s) for s in stops) + 1

    def __call__(self, input_ids, scores, **kwargs):
        start = max(self.prompt_len, input_ids.shape[1] - self.window)
        tail = self.tokenizer.decode(input_ids[0, start:], skip_special_tokens=True)
        return torch.full(
            (input_ids.shape[0],), any(s in tail for s in self.stops), device=input_ids.device
        )


class VLMEngine:
    def __init__(self, model, processor, device: str, base_model_id: str,
                 adapters: Mapping[str, AdapterInfo], merged: str | None = None,
                 max_prompt_tokens: int | None = None):
        self.model = model
        self.processor = processor
        self.device = device
        self.base_model_id = base_model_id
        self.adapters = dict(adapters)
        self.merged = merged
        self.max_prompt_tokens = max_prompt_tokens
        self._lock = threading.Lock()
        eos = model.generation_config.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}

    @classmethod
    def from_pretrained(cls, model: str | Path, adapters: Mapping[str, str | Path] | None = None,
                        device: str = "auto", dtype: str = "auto", merge: bool = False,
                        max_prompt_tokens: int | None = None) -> VLMEngine:
        """Load a VLM and its adapters. `merge` folds the single adapter into the weights."""
        vlm, processor, device = load_vlm(str(model), device=device, dtype=dtype)
        vlm, infos = attach_adapters(vlm, adapters or {})
        merged = None
        if merge:
            if len(infos) != 1:
                raise ValueError("merge needs exactly one adapter")
            merged = next(iter(infos))
            vlm = vlm.merge_and_unload()
            logger.info("merged adapter %s into the base weights", merged)
        return cls(vlm, processor, device, str(model), infos, merged, max_prompt_tokens)

    @property
    def adapter_names(self) -> list[str]:
        return list(self.adapters)

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the images the vision tower sees."""
        ip = self.processor.image_processor
        size = ip.crop_size if getattr(ip, "do_center_crop", False) else ip.size
        if "height" in size:
            return size["height"], size["width"]
        edge = size.get("shortest_edge") or size.get("longest_edge")
        return edge, edge

    def generate(self, messages: Sequence[Message], params: SamplingParams,
                 adapter: str | None = None) -> Generation:
        """Generate one reply; `adapter=None` is the base model."""
        self._check_adapter(adapter)
        inputs = self._encode(messages, params)
        prompt_len = inputs["input_ids"].shape[1]
        criteria = StoppingCriteriaList()
        if params.stop:
            criteria.append(_StopOnText(self.tokenizer, prompt_len, params.stop))
        with self._lock, self._use_adapter(adapter):
            output = self._run(inputs, params, stopping_criteria=criteria)
        new = output[0, prompt_len:]
        text, stopped = cut_at_stop(self.tokenizer.decode(new, skip_special_tokens=True),
                                    params.stop)
        return Generation(text, prompt_len, len(new), self._finish_reason(new, params, stopped))

    def stream(self, messages: Sequence[Message], params: SamplingParams,
               adapter: str | None = None) -> Stream:
        """Start generating in a background thread; iterate the returned Stream for text."""
        self._check_adapter(adapter)
        inputs = self._encode(messages, params)
        return Stream(self, inputs, params, adapter)

    @property
    def context_length(self) -> int | None:
        """Positions the language model was built for; prompt + completion must fit."""
        return getattr(self.model.config.get_text_config(), "max_position_embeddings", None)

    def _encode(self, messages: Sequence[Message], params: SamplingParams):
        inputs = encode(self.processor, messages, self.max_prompt_tokens)
        prompt = inputs["input_ids"].shape[1]
        limit = self.context_length
        if limit is not None and prompt + params.max_tokens > limit:
            raise BadRequest(
                f"this model's maximum context length is {limit} tokens; the request needs "
                f"{prompt + params.max_tokens} ({prompt} in the messages, images included, "
                f"{params.max_tokens} for the completion)",
                param="messages", code="context_length_exceeded",
            )
        return inputs.to(self.model.device)

    def _run(self, inputs, params: SamplingParams, **extra):
        kwargs = {"max_new_tokens": params.max_tokens, **extra}
        if params.min_tokens:
            kwargs["min_new_tokens"] = params.min_tokens
        sampling = self.model.generation_config.do_sample
        if params.temperature is not None:
            sampling = params.temperature > 0
            kwargs["do_sample"] = sampling
            if sampling:
                kwargs["temperature"] = params.temperature
        if params.top_p is not None and sampling:
            kwargs["top_p"] = params.top_p
        if params.seed is not None:
            torch.manual_seed(params.seed)
        with torch.inference_mode():
            return self.model.generate(**inputs, **kwargs)

    def _finish_reason(self, new_tokens, params: SamplingParams, stopped: bool) -> str:
        ended = len(new_tokens) > 0 and int(new_tokens[-1]) in self._eos_ids
        exhausted = len(new_tokens) >= params.max_tokens
        return "length" if exhausted and not (ended or stopped) else "stop"

    def _check_adapter(self, adapter: str | None) -> None:
        if self.merged is not None:
            if adapter != self.merged:
                raise NotFound(
                    f"only {self.merged!r} is served: the adapter is merged into the weights",
                    param="model", code="model_not_found",
                )
        elif adapter is not None and adapter not in self.adapters:
            raise NotFound(
                f"unknown adapter {adapter!r}; available: {sorted(self.adapters)}",
                param="model", code="model_not_found",
            )

    @contextmanager
    def _use_adapter(self, adapter: str | None):
        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            yield
        elif adapter is None:
            with self.model.disable_adapter():
                yield
        else:
            self.model.set_adapter(adapter)
            yield


class Stream:
    """Text deltas of one generation; usage and finish reason are set once it is exhausted.

    Closing the iterator early (client disconnect) stops the generation at the next token.
    """

    def __init__(self, engine: VLMEngine, inputs, params: SamplingParams, adapter: str | None):
        self.prompt_tokens = inputs["input_ids"].shape[1]
        self.completion_tokens = 0
        self.finish_reason = "stop"
        self._engine, self._params = engine, params
        self._halt = threading.Event()
        self._streamer = TextIteratorStreamer(
            engine.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=None
        )
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._work, args=(inputs, adapter), daemon=True, name="crossguard-generate"
        )
        self._thread.start()

    def _work(self, inputs, adapter: str | None) -> None:
        try:
            with self._engine._lock, self._engine._use_adapter(adapter):
                output = self._engine._run(
                    inputs, self._params, streamer=self._streamer,
                    stopping_criteria=StoppingCriteriaList([_Halt(self._halt)]),
                )
            self._new_tokens = output[0, self.prompt_tokens:]
        except BaseException as exc:  # re-raised in the consumer's thread
            self._error = exc
            self._streamer.end()

    def __iter__(self) -> Iterator[str]:
        stops = StopStream(self._params.stop)
        try:
            yield from stops.feed(self._streamer)
        finally:
            self._halt.set()
            self._thread.join()
        if self._error is not None:
            raise self._error
        new = self._new_tokens
        self.completion_tokens = len(new)
        self.finish_reason = self._engine._finish_reason(new, self._params, stops.stopped)
