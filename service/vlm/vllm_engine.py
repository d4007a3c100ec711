"""The vLLM engine: the same contract as the torch engine (`service.vlm.protocol.Engine`), served
by vLLM's `AsyncLLM` (paged attention, requests joining the running batch between steps, one
`LoRARequest` per adapter so mixed adapters share a batch).

It runs inside the BentoML worker as BentoML's BentoVLLM example embeds it, on an asyncio loop
of its own thread, so the runtime's threads keep their `Stream`s: each choice is one vLLM
request whose outputs the loop pushes into its stream. Nothing above the seam changes.

What stays the service's own, as on the torch engine: prompts come from the processor's chat
template (`service.vlm.prompts.encode`, which also gives the prompt's length for the context
check); adapters pass the same checks before vLLM sees them (`service.vlm.adapters`, against a
weightless copy of the model); back-pressure is a bounded number of requests in flight (429)
and a wait for the first output (503); `temperature=None` keeps the model's own sampling
settings. vLLM is imported here only: the torch install never needs it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from service.errors import (
    BadRequest,
    Conflict,
    CrossguardError,
    NotFound,
    NotReady,
    TooManyRequests,
)
from service.vlm.adapters import AdapterInfo, read_adapter, validate_adapter
from service.vlm.batching import model_sampling
from service.vlm.engine import processor_patch_size
from service.vlm.messages import Message
from service.vlm.prompts import encode, processor_image_size, to_conversation
from service.vlm.protocol import (
    LOGPROB_FLOOR,
    Delta,
    Generation,
    Request,
    SamplingParams,
    Stream,
    TokenScore,
    check_logit_bias,
    completion_budget,
    wait_until_decoding,
)
from service.vlm.vllm_checkpoints import vllm_adapter, vllm_checkpoint

logger = logging.getLogger(__name__)

_WATCH_S = 0.05
"""How often the loop looks for cancelled choices and passed deadlines."""

DEFAULT_MAX_LORAS = 9
"""vLLM's LoRA slots unless `engine_args` names `max_loras`; one stays empty (`VLLMEngine`)."""


@dataclass
class _Choice:
    """A choice in flight: its stream, its deadline, its adapter (unloading fails it) and its
    reply so far."""

    stream: Stream
    deadline: float
    adapter: str | None
    reply: _ReplyText
    failed: bool = False
    aborted: bool = False


def local_folder(model: str | Path) -> Path:
    """The checkpoint's folder: `model` itself, or a hub id's snapshot (the files vLLM loads
    anyway; `HF_HUB_OFFLINE=1` reads the cache only)."""
    if Path(model).is_dir():
        return Path(model)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(model), allow_patterns=["*.json", "*.safetensors"]))


def weightless_model(model_dir: str | Path):
    """The model's modules on the meta device with its real input embeddings: enough for
    `validate_adapter` (module names, shapes, the base fingerprint) without the weights."""
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            name = next((n for n in f.keys() if n.endswith("embed_tokens.weight")), None)
            if name is not None:
                model.get_input_embeddings().weight = torch.nn.Parameter(
                    f.get_tensor(name), requires_grad=False)
                break
    return model


class VLLMEngine:
    """`protocol.Engine` over vLLM's `AsyncLLM`. `engine_args` go to vLLM's `AsyncEngineArgs`
    as given (`CROSSGUARD_VLLM_ENGINE_ARGS`); the service sets `model`, `max_num_seqs`
    (`max_batch_size`), `enable_lora`, `max_loras`, `max_lora_rank` and `dtype` unless they
    name them.

    At most `max_loras - 1` adapters are loaded: vLLM's CPU LoRA kernels select a row's adapter
    by indexing the stacked slots with the row's slot number, and a base-model row's number is
    -1, which Python indexing turns into the last slot. With every slot filled, base rows of a
    mixed batch were served with an adapter (tests/vllm/test_engine_equality.py, the mixed
    burst); vLLM fills slots from the first free one, so keeping one spare keeps the last slot
    empty and base rows unchanged."""

    def __init__(self, model: str | Path, *, cache: Path, dtype: str = "auto",
                 max_prompt_tokens: int | None = None, max_batch_size: int = 16,
                 max_waiting: int = 16, wait_timeout_s: float = 60.0,
                 generation_timeout_s: float | None = None, default_max_tokens: int = 256,
                 max_lora_rank: int = 64, engine_args: Mapping | None = None):
        from transformers import AutoProcessor, GenerationConfig

        self.base_model_id = str(model)
        self.merged: str | None = None
        self.processor = AutoProcessor.from_pretrained(self.base_model_id)
        self.max_prompt_tokens = max_prompt_tokens
        self.max_batch_size, self.max_waiting = max_batch_size, max_waiting
        self.wait_timeout_s = wait_timeout_s
        self.generation_timeout_s = generation_timeout_s
        self.default_max_tokens = default_max_tokens
        self._sampling = model_sampling(GenerationConfig.from_pretrained(self.base_model_id))
        self._folder = local_folder(model)
        self._skeleton = weightless_model(self._folder)
        self.context_length = getattr(self._skeleton.config.get_text_config(),
                                      "max_position_embeddings", None)
        self.adapters: dict[str, AdapterInfo] = {}
        self._lora_ids: dict[str, int] = {}
        self._lora_paths: dict[str, str] = {}
        self.cache = cache
        self._next_lora_id = 1
        self._admin = threading.Lock()
        self._in_flight: dict[str, _Choice] = {}
        self._count = threading.Lock()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True,
                         name="crossguard-vllm").start()
        if dtype == "auto" and _on_cpu():
            dtype = "float32"  # the torch engine's CPU default; vLLM's would halve precision
        args = {"model": str(vllm_checkpoint(self._folder, cache)),
                "tokenizer": self.base_model_id, "max_num_seqs": max_batch_size,
                "enable_lora": True, "max_loras": DEFAULT_MAX_LORAS,
                "max_lora_rank": max_lora_rank, "dtype": dtype, **(engine_args or {})}
        self.max_adapters = args["max_loras"] - 1
        self._engine = self._call(self._start(args), timeout=None)
        self._loop.call_soon_threadsafe(self._watch)
        self._call(self._warm_up(), timeout=None)

    @classmethod
    def from_pretrained(cls, model: str | Path, adapters: Mapping[str, str | Path] | None = None,
                        **options) -> VLLMEngine:
        """Start vLLM on `model` and load `adapters`; any adapter failure raises."""
        engine = cls(model, **options)
        for name, path in (adapters or {}).items():
            engine.add_adapter(name, path)
        return engine

    async def _start(self, args: dict):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(AsyncEngineArgs(**args))

    async def _warm_up(self) -> None:
        """One token, so that what vLLM accepts at start-up but cannot run (an attention
        configuration its kernels lack) fails start-up instead of every request."""
        from vllm.sampling_params import SamplingParams as VllmParams

        prompt = self.processor.apply_chat_template(to_conversation([Message.of("user", "hi")]),
                                                    add_generation_prompt=True, tokenize=False)
        async for _ in self._engine.generate({"prompt": prompt},
                                             VllmParams(max_tokens=1, temperature=0.0),
                                             f"warm-up-{uuid.uuid4().hex}"):
            pass

    def _call(self, coroutine, timeout: float | None = 60.0):
        """Run `coroutine` on the engine's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def shutdown(self) -> None:
        self._engine.shutdown()
        self._loop.call_soon_threadsafe(self._loop.stop)

    # -- the contract ---------------------------------------------------------------------------
    @property
    def adapter_names(self) -> list[str]:
        return list(self.adapters)

    @property
    def image_size(self) -> tuple[int, int]:
        return processor_image_size(self.processor)

    @property
    def patch_size(self) -> int:
        return processor_patch_size(self.processor, self._skeleton.config)

    @property
    def vocab_size(self) -> int:
        return len(self.processor.tokenizer)

    @property
    def busy(self) -> bool:
        return bool(self._in_flight)

    def white_box(self) -> None:
        """vLLM exposes no gradients: white-box probes report themselves unsupported."""
        return None

    def merge(self, name: str | None) -> None:
        raise ValueError("the vLLM engine serves adapters per request (LoRARequest); merging "
                         "one into the weights is a torch-engine option (CROSSGUARD_ENGINE=torch)")

    def add_adapter(self, name: str, path: str | Path) -> AdapterInfo:
        """Check the adapter as the torch engine does (422 when it does not fit this model),
        then load it into vLLM; the engine is unchanged when either refuses."""
        from vllm.lora.request import LoRARequest

        info = read_adapter(name, path)
        with self._admin:
            if name in self.adapters:
                raise Conflict(f"adapter {name!r} is already loaded", param="name",
                               code="adapter_exists")
            if len(self.adapters) >= self.max_adapters:
                raise Conflict(f"{len(self.adapters)} adapters are loaded, the most this vLLM "
                               "engine serves (max_loras - 1: one LoRA slot stays empty for "
                               "base-model rows); unload one first", param="name",
                               code="too_many_adapters")
            if info.scope != "all":
                raise BadRequest(f"adapter {name!r} is scoped to the reply (aLoRA), which the "
                                 "vLLM engine does not serve; use CROSSGUARD_ENGINE=torch",
                                 param="path", code="invalid_adapter")
            validate_adapter(self._skeleton, info, self.processor)
            lora_id = self._next_lora_id
            path = str(vllm_adapter(info.path, self._folder, self.cache))
            request = LoRARequest(lora_name=name, lora_int_id=lora_id, lora_path=path)
            try:
                self._call(self._engine.add_lora(request))
            except Exception as exc:
                raise BadRequest(f"adapter {name!r}: vLLM refused it ({exc})", param="path",
                                 code="invalid_adapter") from None
            self._next_lora_id += 1
            self.adapters[name], self._lora_ids[name] = info, lora_id
            self._lora_paths[name] = path
        return info

    def remove_adapter(self, name: str) -> None:
        """Unload an adapter; its requests still queued or decoding end with 404."""
        with self._admin:
            if name not in self.adapters:
                raise NotFound(f"unknown adapter {name!r}", param="name", code="model_not_found")
            lora_id = self._lora_ids.pop(name)
            del self.adapters[name], self._lora_paths[name]
        gone = [(rid, c) for rid, c in list(self._in_flight.items()) if c.adapter == name]
        for _, choice in gone:
            choice.failed = True
            choice.stream.fail(NotFound(f"adapter {name!r} was unloaded", param="model",
                                        code="model_not_found"))
        self._call(self._abort_all([rid for rid, _ in gone]))
        self._call(self._engine.remove_lora(lora_id))

    async def _abort_all(self, request_ids: list[str]) -> None:
        if request_ids:
            await self._engine.abort(request_ids)

    def submit(self, messages: Sequence[Message], params: SamplingParams,
               adapter: str | None = None) -> list[Stream]:
        """Queue one request (429 beyond `max_batch_size + max_waiting` choices in flight); one
        vLLM request per choice, choice `i` seeded with `seed + i` as on the torch engine."""
        lora = self._lora_request(adapter)
        check_logit_bias(params.logit_bias, self.vocab_size)
        prompt, length = self._prompt(messages)
        max_tokens = completion_budget(length, params.max_tokens, self.context_length,
                                       self.default_max_tokens)
        streams = [Stream(length, i, params.logprobs is not None) for i in range(params.n)]
        with self._count:
            if len(self._in_flight) + params.n > max(self.max_batch_size + self.max_waiting,
                                                     params.n):
                raise TooManyRequests(f"{len(self._in_flight)} choices are running or queued "
                                      "on this worker; retry later", retry_after=1,
                                      code="queue_full")
            deadline = time.monotonic() + (self.generation_timeout_s or math.inf)
            ids = [f"{uuid.uuid4().hex}-{i}" for i in range(params.n)]
            choices = {rid: _Choice(s, deadline, adapter, _ReplyText(self.processor.tokenizer))
                       for rid, s in zip(ids, streams, strict=True)}
            self._in_flight.update(choices)
        for rid, choice in choices.items():
            asyncio.run_coroutine_threadsafe(self._decode(
                rid, choice, prompt, self._vllm_params(params, max_tokens, choice.stream.index),
                lora), self._loop)
        return streams

    def submit_many(self, requests: Sequence[Request]) -> list[list[Stream]]:
        """Queue several requests (vLLM schedules continuously: queued one after another, they
        decode together); when one is refused, those already queued are withdrawn."""
        submitted: list[list[Stream]] = []
        try:
            for r in requests:
                submitted.append(self.submit(r.messages, r.params, r.adapter))
        except BaseException:
            for stream in (s for streams in submitted for s in streams):
                stream.cancel()
            raise
        return submitted

    def wait_started(self, streams: list[Stream]) -> None:
        """Wait for every choice's first output; after the queue timeout they are withdrawn
        (503)."""
        wait_until_decoding(streams, self.wait_timeout_s, lambda: NotReady(
            f"waited {self.wait_timeout_s:.0f}s for vLLM to schedule the request",
            code="queue_timeout", retry_after=1))

    def generate(self, messages: Sequence[Message], params: SamplingParams,
                 adapter: str | None = None) -> Generation:
        """One reply, delivered whole (vLLM's FINAL_ONLY output kind)."""
        if params.n != 1:
            raise ValueError("one reply is one choice; use submit for n > 1")
        streams = self.submit(messages, replace(params, deltas=False), adapter)
        self.wait_started(streams)
        return streams[0].result()

    # -- internals ------------------------------------------------------------------------------
    def _lora_request(self, adapter: str | None):
        from vllm.lora.request import LoRARequest

        if adapter is None:
            return None
        if adapter not in self.adapters:
            raise NotFound(f"unknown adapter {adapter!r}; available: {sorted(self.adapters)}",
                           param="model", code="model_not_found")
        return LoRARequest(lora_name=adapter, lora_int_id=self._lora_ids[adapter],
                           lora_path=self._lora_paths[adapter])

    def _prompt(self, messages: Sequence[Message]) -> tuple[dict, int]:
        """vLLM's prompt (the chat template's text, images as `multi_modal_data`) and its length
        in tokens, images included, from the same processor call the torch engine makes."""
        inputs = encode(self.processor, messages, self.max_prompt_tokens)
        text = self.processor.apply_chat_template(to_conversation(messages),
                                                  add_generation_prompt=True, tokenize=False)
        images = [image for m in messages for image in m.images]
        prompt = {"prompt": text}
        if images:
            prompt["multi_modal_data"] = {"image": images}
        return prompt, int(inputs["input_ids"].shape[1])

    def _vllm_params(self, p: SamplingParams, max_tokens: int, index: int):
        from vllm.sampling_params import RequestOutputKind
        from vllm.sampling_params import SamplingParams as VllmParams

        own = self._sampling
        if p.temperature is None:
            temperature = own["temperature"] if own["do_sample"] else 0.0
        else:
            temperature = p.temperature
        return VllmParams(
            n=1, max_tokens=max_tokens, min_tokens=min(p.min_tokens, max_tokens),
            temperature=temperature,
            top_p=own["top_p"] if p.top_p is None else p.top_p,
            top_k=own["top_k"] or 0, stop=list(p.stop) or None,
            seed=None if p.seed is None else p.seed + index,
            logprobs=p.logprobs, logit_bias=dict(p.logit_bias) or None,
            presence_penalty=p.presence_penalty, frequency_penalty=p.frequency_penalty,
            output_kind=RequestOutputKind.DELTA if p.deltas else RequestOutputKind.FINAL_ONLY,
        )

    async def _decode(self, rid: str, choice: _Choice, prompt: dict, params, lora) -> None:
        """One choice: vLLM's outputs into the stream until it finishes, is aborted (client gone,
        deadline: `_watch`) or fails."""
        from vllm.sampling_params import RequestOutputKind

        stream, text = choice.stream, choice.reply
        deltas = params.output_kind == RequestOutputKind.DELTA
        piece = None
        try:
            async for out in self._engine.generate(prompt, params, rid, lora_request=lora):
                piece = out.outputs[0]
                stream.started()
                new = text.add(piece.token_ids, piece.text, deltas)
                if new or piece.logprobs:
                    stream.push(Delta(new, self._logprobs(piece, params.logprobs)))
            if piece is not None and piece.stop_reason is None and (rest := text.rest()):
                stream.push(Delta(rest))
            reason = piece.finish_reason if piece is not None else None
            if not choice.failed:  # an unloaded adapter failed it already
                stream.finish("length" if reason in (None, "abort") else reason, len(text.ids))
        except Exception as exc:  # noqa: BLE001 - the consumer re-raises it
            logger.exception("vLLM generation failed")
            stream.fail(exc if isinstance(exc, CrossguardError)
                        else CrossguardError("generation failed"))
        finally:
            self._in_flight.pop(rid, None)

    def _logprobs(self, choice, top: int | None) -> tuple[TokenScore, ...]:
        if top is None or not choice.logprobs:
            return ()
        decode = self.processor.tokenizer.decode
        found = []
        for token, entries in zip(choice.token_ids, choice.logprobs, strict=True):
            # vLLM ranks a chosen token that ties with a top-k one after it (one dict entry per
            # token): order by log-probability, the chosen token first among equals
            ranked = sorted(entries.items(), key=lambda kv: (-kv[1].logprob, kv[0] != token))
            alternatives = tuple((decode([t]), max(e.logprob, LOGPROB_FLOOR))
                                 for t, e in ranked[:top])
            found.append(TokenScore(decode([token]), max(entries[token].logprob,
                                                           LOGPROB_FLOOR), alternatives))
        return tuple(found)

    def _watch(self) -> None:
        """Abort choices whose client left or whose deadline passed (they end with `length`,
        as on the torch engine), then look again in `_WATCH_S`."""
        now = time.monotonic()
        gone = []
        for rid, choice in list(self._in_flight.items()):
            why = "client gone" if choice.stream.cancelled else \
                "time limit" if now >= choice.deadline else None
            if why and not choice.aborted:
                choice.aborted = True
                gone.append(rid)
                logger.info("generation halted after %d tokens (%s)", len(choice.reply.ids), why)
        if gone:
            self._loop.create_task(self._abort_all(gone))
        self._loop.call_later(_WATCH_S, self._watch)



def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


class _ReplyText:
    """A reply's text as the torch engine writes it (the decode of its own tokens), from vLLM's
    outputs. vLLM decodes each token in the context of the prompt, so with a SentencePiece-style
    tokenizer (the demo's) the first token keeps the space its `▁` stands for, which decoding
    the reply alone drops; and it holds back bytes that do not yet form a character, dropping
    them when the reply ends, where decoding the reply gives U+FFFD. Streamed and whole replies
    then equal the torch engine's. vLLM's own text is kept otherwise: it applies stop strings."""

    def __init__(self, tokenizer):
        self.tokenizer, self.ids, self.vllm, self.sent = tokenizer, [], "", ""
        self.drop: int | None = None

    def add(self, token_ids, text: str, deltas: bool) -> str:
        """Take one output (a delta, or the whole reply); return the text to send now."""
        self.ids = self.ids + list(token_ids) if deltas else list(token_ids)
        self.vllm = self.vllm + text if deltas else text
        if self.drop is None and self.vllm:
            alone = self.tokenizer.decode(self.ids, skip_special_tokens=True)
            lead = len(self.vllm) - len(self.vllm.lstrip())
            self.drop = lead if lead and not alone[:1].isspace() else 0
        new = self.vllm[self.drop or 0:][len(self.sent):]
        self.sent += new
        return new

    def rest(self) -> str:
        """At the end of a reply no stop string cut: what decoding the reply gives beyond the
        text sent (bytes vLLM held back)."""
        whole = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        return whole[len(self.sent):] if whole.startswith(self.sent) else ""
