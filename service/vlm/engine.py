"""The torch engine: one VLM, its adapters, and a decoding loop that batches requests.

Concurrent requests on a worker are decoded together: a background thread takes what waits in
`Admission` (up to `max_batch_size` rows) and runs one batched `generate` in which every row
keeps its own adapter, sampling, stops and limits (`service.vlm.batching`). On 16 concurrent
clients this serves several times the throughput of one-at-a-time decoding (README "Batching").
Loading or unloading an adapter waits for the running batch; requests already queued for an
unloaded adapter get 404. `max_batch_size=1` is one-at-a-time decoding.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from service.errors import Conflict, CrossguardError, NotFound
from service.vlm.adapters import (
    AdapterInfo,
    attach_adapters,
    load_adapter,
    read_adapter,
    unload_adapter,
)
from service.vlm.admission import Admission
from service.vlm.batching import Row, run_batch
from service.vlm.loading import load_vlm
from service.vlm.messages import Message
from service.vlm.prompts import encode, processor_image_size
from service.vlm.protocol import (
    Generation,
    Request,
    SamplingParams,
    Stream,
    WhiteBox,
    check_logit_bias,
    completion_budget,
    wait_until_decoding,
)

logger = logging.getLogger(__name__)

_ENGINES: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _let_batches_end() -> None:
    """Wait for every engine's running batch before the interpreter finalises. A reply is
    handed over as its row finishes, mid-step, so a short-lived process (a bench, a CLI) often
    exits while the decoding thread is still inside torch; Python then ends that thread by
    unwinding through torch's C++ frames, which aborts the process ("terminate called without an
    active exception", exit status 134)."""
    for engine in list(_ENGINES):
        with engine._model_lock:
            pass


def processor_patch_size(processor, model_config) -> int | None:
    """Pixels per side of a vision-tower patch: the processor's `patch_size` (LLaVA's), else the
    vision config's, else None (both engines answer `Engine.patch_size` with it)."""
    patch = getattr(processor, "patch_size", None)
    if not patch:
        patch = getattr(getattr(model_config, "vision_config", None), "patch_size", None)
    return int(patch) if patch else None


class VLMEngine:
    def __init__(self, model, processor, device: str, base_model_id: str,
                 adapters: Mapping[str, AdapterInfo], *,
                 max_prompt_tokens: int | None = None, admission: Admission | None = None,
                 generation_timeout_s: float | None = None, default_max_tokens: int = 256):
        self.model = model
        self.processor = processor
        self.device = device
        self.base_model_id = base_model_id
        self.adapters = dict(adapters)
        self.merged: str | None = None
        self.max_prompt_tokens = max_prompt_tokens
        self.admission = admission or Admission()
        self.generation_timeout_s = generation_timeout_s
        self.default_max_tokens = default_max_tokens
        eos = model.generation_config.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        tokenizer = processor.tokenizer
        self._pad_id = next(i for i in (tokenizer.pad_token_id, *sorted(self._eos_ids), 0)
                            if i is not None)
        self._model_lock = threading.Lock()
        _ENGINES.add(self)
        self._loop = threading.Thread(target=self._decode_forever, daemon=True,
                                      name="crossguard-decode")
        self._loop.start()

    @classmethod
    def from_pretrained(cls, model: str | Path, adapters: Mapping[str, str | Path] | None = None,
                        device: str = "auto", dtype: str = "auto", merge: bool = False,
                        **options) -> VLMEngine:
        """Load a VLM and its adapters; any adapter failure raises. `merge` folds the single
        adapter into the weights. `options` go to the constructor (limits, admission)."""
        vlm, processor, device = load_vlm(str(model), device=device, dtype=dtype)
        vlm, infos = attach_adapters(vlm, adapters or {}, processor)
        engine = cls(vlm, processor, device, str(model), infos, **options)
        if merge:
            engine.merge(next(iter(infos), None))
        return engine

    def merge(self, name: str | None) -> None:
        """Fold the only adapter into the base weights: no LoRA cost per token, but neither the
        base model nor other adapters can be served any more."""
        if name is None or list(self.adapters) != [name]:
            raise ValueError(f"merge needs exactly one loaded adapter, have {self.adapter_names}")
        if self.adapters[name].scope != "all":
            raise ValueError(f"adapter {name!r} is scoped to the reply (aLoRA): its delta depends "
                             "on the position, so it cannot be folded into the weights")
        with self._model_lock:
            self.model = self.model.merge_and_unload()
            self.merged = name
        logger.info("merged adapter %s into the base weights", name)

    def add_adapter(self, name: str, path: str | Path) -> AdapterInfo:
        """Load an adapter while serving: waits for the running batch, leaves the engine as it
        was if the adapter is refused."""
        info = read_adapter(name, path)
        with self._model_lock:
            self._check_mutable()
            if name in self.adapters:
                raise Conflict(f"adapter {name!r} is already loaded", param="name",
                               code="adapter_exists")
            self.model = load_adapter(self.model, info, self.processor)
            self.adapters[name] = info
        return info

    def remove_adapter(self, name: str) -> None:
        """Unload an adapter once the running batch (which may use it) has finished."""
        with self._model_lock:
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

    @property
    def patch_size(self) -> int | None:
        return processor_patch_size(self.processor, self.model.config)

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def white_box(self) -> WhiteBox:
        return WhiteBox(self.model, self.processor)

    @property
    def busy(self) -> bool:
        return self.admission.admitted > 0

    @property
    def context_length(self) -> int | None:
        """Positions the language model was built for; prompt + completion must fit."""
        return getattr(self.model.config.get_text_config(), "max_position_embeddings", None)

    def submit(self, messages: Sequence[Message], params: SamplingParams,
               adapter: str | None = None) -> list[Stream]:
        """Queue one request (429 when the queue is full); one stream per choice."""
        (streams,) = self.submit_many([Request(messages, params, adapter)])
        return streams

    def submit_many(self, requests: Sequence[Request]) -> list[list[Stream]]:
        """Queue several requests in one step (429 refuses them all): all are encoded first,
        so the decoding loop does not start a batch on the first while the others are still
        being encoded, as it does for requests submitted one after another."""
        rows = [self._rows(r.messages, r.params, r.adapter) for r in requests]
        self.admission.put([row for request_rows in rows for row in request_rows])
        return [[row.stream for row in request_rows] for request_rows in rows]

    def _rows(self, messages: Sequence[Message], params: SamplingParams,
              adapter: str | None) -> list[Row]:
        """One request's rows, one per choice, encoded and checked."""
        self._check_adapter(adapter)
        check_logit_bias(params.logit_bias, self.vocab_size)
        inputs, max_tokens = self._encode(messages, params)
        prompt = inputs["input_ids"].shape[1]
        want_logprobs = params.logprobs is not None
        return [Row(Stream(prompt, i, want_logprobs), inputs, params, max_tokens, adapter)
                for i in range(params.n)]

    def wait_started(self, streams: list[Stream]) -> None:
        """Wait until the request decodes; after the queue timeout it is withdrawn (503)."""
        wait_until_decoding(streams, self.admission.wait_timeout_s, self.admission.timed_out)

    def generate(self, messages: Sequence[Message], params: SamplingParams,
                 adapter: str | None = None) -> Generation:
        """Generate one reply (`params.n` must be 1); `adapter=None` is the base model. Nobody
        reads its deltas, so none are made."""
        return self.stream(messages, replace(params, deltas=False), adapter).result()

    def stream(self, messages: Sequence[Message], params: SamplingParams,
               adapter: str | None = None) -> Stream:
        """Start generating one reply (`params.n` must be 1); iterate the returned Stream for
        its text deltas."""
        if params.n != 1:
            raise ValueError("one reply is one choice; use submit for n > 1")
        streams = self.submit(messages, params, adapter)
        self.wait_started(streams)
        return streams[0]

    def _encode(self, messages: Sequence[Message], params: SamplingParams):
        """Model inputs and the completion budget: `max_tokens`, or when the request gives
        none, what the context leaves (capped by `default_max_tokens`), as vLLM does."""
        inputs = encode(self.processor, messages, self.max_prompt_tokens)
        max_tokens = completion_budget(inputs["input_ids"].shape[1], params.max_tokens,
                                       self.context_length, self.default_max_tokens)
        return inputs.to(self.model.device), max_tokens

    def _decode_forever(self) -> None:
        while True:
            rows = self.admission.take()
            started = time.monotonic()
            try:
                with self._model_lock:
                    self._decode([r for r in rows if self._still_served(r)])
            finally:
                self.admission.done(time.monotonic() - started)

    def _still_served(self, row: Row) -> bool:
        try:
            self._check_adapter(row.adapter)
        except NotFound:
            row.done = True
            row.stream.fail(NotFound(f"adapter {row.adapter!r} was unloaded", param="model",
                                     code="model_not_found"))
            return False
        return True

    def _decode(self, rows: list[Row]) -> None:
        """One batch; if a multi-row batch fails before its first token (inputs of a model
        family that cannot share a batch), its rows are decoded one by one."""
        from peft import PeftModel

        if not rows:
            return
        peft = isinstance(self.model, PeftModel) and self.merged is None
        try:
            run_batch(self.model, rows, tokenizer=self.tokenizer, eos_ids=self._eos_ids,
                      pad_id=self._pad_id, timeout_s=self.generation_timeout_s, peft=peft)
        except Exception as exc:
            if len(rows) > 1 and not any(r.tokens or r.done for r in rows):
                logger.warning("batch of %d failed (%s); decoding its rows one by one",
                               len(rows), exc)
                for row in rows:
                    self._decode([row])
                return
            logger.exception("generation failed")
            error = exc if isinstance(exc, CrossguardError) else CrossguardError(
                "generation failed")
            for row in rows:
                if not row.done:
                    row.done = True
                    row.stream.fail(error)

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
