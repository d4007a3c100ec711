"""The generation engine: one VLM, its adapters, and thread-safe generate/stream calls.

peft's active adapter is global model state, so choosing the adapter and generating happen
in one generation slot (`Admission`): a worker runs one generation at a time behind a bounded
wait queue, and concurrency comes from BentoML workers and replicas.
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

from service.errors import BadRequest, Conflict, NotFound
from service.vlm.adapters import (
    AdapterInfo,
    attach_adapters,
    load_adapter,
    read_adapter,
    unload_adapter,
)
from service.vlm.admission import Admission
from service.vlm.loading import load_vlm
from service.vlm.messages import Message
from service.vlm.prompts import encode, processor_image_size
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
                 adapters: Mapping[str, AdapterInfo], *,
                 max_prompt_tokens: int | None = None, admission: Admission | None = None,
                 generation_timeout_s: float | None = None):
        self.model = model
        self.processor = processor
        self.device = device
        self.base_model_id = base_model_id
        self.adapters = dict(adapters)
        self.merged: str | None = None
        self.max_prompt_tokens = max_prompt_tokens
        self.admission = admission or Admission()
        self.generation_timeout_s = generation_timeout_s
        eos = model.generation_config.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}

    @classmethod
    def from_pretrained(cls, model: str | Path, adapters: Mapping[str, str | Path] | None = None,
                        device: str = "auto", dtype: str = "auto", merge: bool = False,
                        **options) -> VLMEngine:
        """Load a VLM and its adapters; any adapter failure raises. `merge` folds the single
        adapter into the weights. `options` go to the constructor (limits, admission)."""
        vlm, processor, device = load_vlm(str(model), device=device, dtype=dtype)
        vlm, infos = attach_adapters(vlm, adapters or {})
        engine = cls(vlm, processor, device, str(model), infos, **options)
        if merge:
            engine.merge(next(iter(infos), None))
        return engine

    def merge(self, name: str | None) -> None:
        """Fold the only adapter into the base weights: no LoRA cost per token, but neither the
        base model nor other adapters can be served any more."""
        if name is None or list(self.adapters) != [name]:
            raise ValueError(f"merge needs exactly one loaded adapter, have {self.adapter_names}")
        with self.admission.exclusive():
            self.model = self.model.merge_and_unload()
            self.merged = name
        logger.info("merged adapter %s into the base weights", name)

    def add_adapter(self, name: str, path: str | Path) -> AdapterInfo:
        """Load an adapter while serving: waits for the running generation, leaves the engine
        as it was if the adapter is refused."""
        info = read_adapter(name, path)
        with self.admission.exclusive():
            self._check_mutable()
            if name in self.adapters:
                raise Conflict(f"adapter {name!r} is already loaded", param="name",
                               code="adapter_exists")
            self.model = load_adapter(self.model, info)
            self.adapters[name] = info
        return info

    def remove_adapter(self, name: str) -> None:
        """Unload an adapter once the running generation (which may use it) has finished."""
        with self.admission.exclusive():
            self._check_mutable()
            if name not in self.adapters:
                raise NotFound(f"unknown adapter {name!r}", param="name",
                               code="model_not_found")
            self.model = unload_adapter(self.model, name)
            del self.adapters[name]

    @property
    def adapter_names(self) -> list[str]:
        return list(self.adapters)

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the images the vision tower sees."""
        return processor_image_size(self.processor)

    def generate(self, messages: Sequence[Message], params: SamplingParams,
                 adapter: str | None = None) -> Generation:
        """Generate one reply; `adapter=None` is the base model."""
        self._check_adapter(adapter)
        inputs = self._encode(messages, params)
        prompt_len = inputs["input_ids"].shape[1]
        criteria = StoppingCriteriaList()
        if params.stop:
            criteria.append(_StopOnText(self.tokenizer, prompt_len, params.stop))
        with self.admission.slot(), self._use_adapter(adapter):
            output = self._run(inputs, params, stopping_criteria=criteria)
        new = output[0, prompt_len:]
        text, stopped = cut_at_stop(self.tokenizer.decode(new, skip_special_tokens=True),
                                    params.stop)
        return Generation(text, prompt_len, len(new), self._finish_reason(new, stopped))

    def stream(self, messages: Sequence[Message], params: SamplingParams,
               adapter: str | None = None) -> Stream:
        """Start generating in a background thread; iterate the returned Stream for text."""
        self._check_adapter(adapter)
        inputs = self._encode(messages, params)
        started = self.admission.acquire()
        return Stream(self, inputs, params, adapter, started)

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
        kwargs = {"max_new_tokens": params.max_tokens, "max_time": self.generation_timeout_s,
                  **extra}
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

    def _finish_reason(self, new_tokens, stopped: bool) -> str:
        """`stop` for eos or a stop sequence; anything else hit a limit (tokens or time)."""
        ended = len(new_tokens) > 0 and int(new_tokens[-1]) in self._eos_ids
        return "stop" if ended or stopped else "length"

    def _check_mutable(self) -> None:
        if self.merged is not None:
            raise Conflict(f"adapter {self.merged!r} is merged into the weights; adapters "
                           "cannot be changed at run time", code="adapters_merged")

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
        """Activate `adapter` for the duration of one generation (inside the slot)."""
        from peft import PeftModel

        if adapter is not None and self.merged is None and adapter not in self.adapters:
            raise NotFound(f"adapter {adapter!r} was unloaded", param="model",
                           code="model_not_found")
        if not isinstance(self.model, PeftModel):
            yield
        elif adapter is None:
            with self.model.disable_adapter():
                yield
        else:
            self.model.set_adapter(adapter)
            yield


class Stream:
    """Text deltas of one generation; text, usage and finish reason are complete once it is
    exhausted.

    Closing the iterator early (client disconnect) stops the generation at the next token.
    """

    def __init__(self, engine: VLMEngine, inputs, params: SamplingParams, adapter: str | None,
                 started: float):
        self.prompt_tokens = inputs["input_ids"].shape[1]
        self.completion_tokens = 0
        self.text = ""
        self.finish_reason = "stop"
        self._engine, self._params = engine, params
        self._halt = threading.Event()
        self._streamer = TextIteratorStreamer(
            engine.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=None
        )
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._work, args=(inputs, adapter, started), daemon=True,
            name="crossguard-generate",
        )
        self._thread.start()

    def cancel(self) -> None:
        """Stop generating at the next token (the client went away)."""
        self._halt.set()

    def _work(self, inputs, adapter: str | None, started: float) -> None:
        """Runs in its own thread, which owns the generation slot taken by `engine.stream`."""
        try:
            with self._engine._use_adapter(adapter):
                output = self._engine._run(
                    inputs, self._params, streamer=self._streamer,
                    stopping_criteria=StoppingCriteriaList([_Halt(self._halt)]),
                )
            self._new_tokens = output[0, self.prompt_tokens:]
            if self._halt.is_set():
                logger.info("generation halted after %d tokens (stop sequence or client gone)",
                            len(self._new_tokens))
        except BaseException as exc:  # re-raised in the consumer's thread
            self._error = exc
            self._streamer.end()
        finally:
            self._engine.admission.release(started)

    def __iter__(self) -> Iterator[str]:
        stops = StopStream(self._params.stop)
        try:
            for piece in stops.feed(self._streamer):
                self.text += piece
                yield piece
        finally:
            self._halt.set()
            if threading.current_thread() is not self._thread:
                self._thread.join()
        if self._error is not None:
            raise self._error
        new = self._new_tokens
        self.completion_tokens = len(new)
        self.finish_reason = self._engine._finish_reason(new, stops.stopped)
