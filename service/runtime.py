"""What the service does, apart from BentoML: start-up that fails closed, chat, adapter admin.

`service/app.py` binds these methods to routes; tests and benchmarks can drive a Runtime
directly.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from service import metrics
from service.conversion import (
    resolve_adapter,
    to_logprobs,
    to_messages,
    to_sampling_params,
    to_usage,
)
from service.errors import BadRequest, CrossguardError, Forbidden, NotFound, NotReady
from service.model_store import resolve_adapter_source
from service.probe_scheduler import ProbeScheduler
from service.probes.judges import KeywordRefusalJudge
from service.rollout import Rollout
from service.schemas import (
    AdapterLoadRequest,
    AssistantMessage,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ModelCard,
    ModelList,
)
from service.settings import ServiceSettings
from service.streaming import sse_events
from service.vlm.folders import BASE, adapter_label
from service.vlm.messages import modality
from service.vlm.protocol import Engine, Stream

logger = logging.getLogger("crossguard")
audit = logging.getLogger("crossguard.audit")


def configure_logging(level: str) -> None:
    """Give our loggers (`crossguard.*` and the `service.*` modules) a handler: BentoML
    configures only its own."""
    for name in ("crossguard", "service"):
        root = logging.getLogger(name)
        root.setLevel(level)
        if not root.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] [%(name)s] "
                                                   "%(message)s"))
            root.addHandler(handler)
            root.propagate = False


def open_engine(settings: ServiceSettings) -> Engine:
    """The engine `CROSSGUARD_ENGINE` names, with the service's limits; adapters come after."""
    limits = {"max_prompt_tokens": settings.max_prompt_tokens,
              "generation_timeout_s": settings.generation_timeout_s,
              "default_max_tokens": settings.default_max_tokens}
    if settings.engine == "vllm":
        from service.vlm.vllm_engine import VLLMEngine

        return VLLMEngine(settings.model_path, cache=settings.home / "vllm-models",
                          dtype=settings.dtype, max_batch_size=settings.max_batch_size,
                          max_waiting=settings.max_waiting,
                          wait_timeout_s=settings.queue_timeout_s,
                          engine_args=settings.vllm_engine_args, **limits)
    from service.vlm.admission import Admission
    from service.vlm.engine import VLMEngine
    from service.vlm.loading import configure_cpu_threads

    configure_cpu_threads(settings.cpu_threads)
    return VLMEngine.from_pretrained(
        settings.model_path, device=settings.device, dtype=settings.dtype,
        admission=Admission(settings.max_waiting, settings.queue_timeout_s,
                            settings.max_batch_size, settings.batch_wait_ms / 1000), **limits)


@dataclass
class ChatResult:
    """What `Runtime.chat` produced; `service/app.py` turns it into the HTTP response."""

    headers: dict[str, str]
    response: ChatCompletionResponse | None = None
    events: Iterator[str] | None = None
    streams: list[Stream] = field(default_factory=list)


class Runtime:
    def __init__(self, settings: ServiceSettings, run_folder: Path):
        """`run_folder`: this server's own folder (`service.instance.instance_dir`)."""
        configure_logging(settings.log_level)
        self.settings = settings
        self.engine: Engine = open_engine(settings)
        self.failed: dict[str, str] = {}
        for name, source in settings.adapters.items():
            self._load_configured(name, source)
        if settings.merge_adapter and not self.failed:
            self.engine.merge(next(iter(settings.adapters)))
        self._report_startup()
        self.refusals = KeywordRefusalJudge()
        self.probes = ProbeScheduler(self.engine, settings, run_folder)
        self.rollout = Rollout(self.engine, settings, run_folder, self.probes)
        metrics.declare_probe_runs()
        for label in [BASE, *self.engine.adapter_names]:
            metrics.declare_adapter(label, settings.model_path)

    def _load_configured(self, name: str, source: str) -> None:
        try:
            self.engine.add_adapter(name, resolve_adapter_source(name, source))
        except (CrossguardError, ValueError, OSError, RuntimeError) as exc:
            self.failed[name] = str(exc)
            logger.error("ADAPTER %r FAILED TO LOAD from %s: %s", name, source, exc)

    def _report_startup(self) -> None:
        default = self.settings.default_adapter
        if default in self.failed:
            if self.settings.allow_unsafe_base:
                logger.critical("SAFETY ADAPTER %r IS NOT LOADED: requests without `model` are "
                                "served by the UNALIGNED BASE MODEL (allow_unsafe_base=true)",
                                default)
            else:
                logger.critical("safety adapter %r is not loaded: failing closed (not ready, "
                                "chat for it answers 503)", default)
        logger.info("serving %s with adapters %s", self.settings.model_path,
                    self.engine.adapter_names)

    def promote_at_startup(self) -> None:
        """`CROSSGUARD_PROMOTE`: gate the named adapter in the background once ready; the
        configured default serves until then, and stays if it fails."""
        name = self.settings.promote
        if name is None or not self.ready:
            return

        def gate() -> None:
            try:
                self.rollout.promote(name)
            except CrossguardError as exc:
                logger.error("start-up promotion of %r refused: %s", name, exc.message)

        threading.Thread(target=gate, daemon=True, name="crossguard-promote").start()

    @property
    def ready(self) -> bool:
        """Ready once the model and every configured adapter are loaded (see allow_unsafe_base)."""
        return not self.failed or self.settings.allow_unsafe_base

    def models(self) -> ModelList:
        base, root = self.settings.served_model_name, self.settings.model_path
        cards = [] if self.engine.merged else [ModelCard(id=base, root=root)]
        cards += [ModelCard(id=n, root=root, parent=base) for n in self.engine.adapter_names]
        return ModelList(data=cards)

    def _select(self, model: str | None, client: str | None) -> tuple[str | None, str]:
        """The adapter for `model`; a request naming none gets the default or, for its share
        of clients, the canary (`service.rollout`)."""
        if model is None:
            adapter = self.rollout.route(client)
            served_as = adapter or self.settings.served_model_name
        else:
            adapter, served_as = resolve_adapter(model, self.settings, self.settings.model_path)
        if adapter in self.failed:
            if model is None and self.settings.allow_unsafe_base:
                return None, self.settings.served_model_name
            raise NotReady(f"adapter {adapter!r} failed to load on this replica; it fails "
                           "closed rather than answer without it", code="adapter_unavailable")
        return adapter, served_as

    def chat(self, request: ChatCompletionRequest, client: str | None = None) -> ChatResult:
        """Run one chat request: the whole response, or (`stream=true`) its SSE events once
        its choices are decoding (queue errors still come back as HTTP statuses). `client`:
        the key a canary keeps sticky (the `X-Crossguard-Client` header), else `user`."""
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        adapter, served_as = self._select(request.model, client or request.user)
        params = to_sampling_params(request, self.settings)
        messages = to_messages(request, self.settings)
        headers = {"x-request-id": request_id, "x-crossguard-adapter": served_as}
        kind = modality(messages)
        streams = self.engine.submit(messages, params, adapter)
        self.engine.wait_started(streams)
        if request.stream:
            usage = bool(request.stream_options and request.stream_options.include_usage)
            events = sse_events(streams, served_as, usage, request_id,
                                on_finish=lambda done: self._observe(request_id, adapter, kind,
                                                                     done, request.user))
            return ChatResult(headers, events=events, streams=streams)
        outs = [s.result() for s in streams]
        for out in outs:
            self._observe(request_id, adapter, kind, out, request.user)
        response = ChatCompletionResponse(
            id=request_id, model=served_as,
            choices=[Choice(index=i, message=AssistantMessage(content=out.text),
                            logprobs=to_logprobs(out.logprobs), finish_reason=out.finish_reason)
                     for i, out in enumerate(outs)],
            usage=to_usage(outs),
        )
        return ChatResult(headers, response=response)

    def _observe(self, request_id: str, adapter: str | None, kind: str, out,
                 user: str | None) -> None:
        """Judge a finished live reply with the keyword judge: metrics, then the audit line."""
        label = adapter_label(adapter)
        refused = self.refusals.refused(out.text) is True
        metrics.record_chat_response(label, kind, refused, out.completion_tokens)
        if self.settings.audit_log:
            audit.info(json.dumps({
                "request_id": request_id, "adapter": label, "modality": kind,
                "outcome": "refused" if refused else "answered",
                "finish_reason": out.finish_reason, "prompt_tokens": out.prompt_tokens,
                "completion_tokens": out.completion_tokens, "user": user,
            }))

    def add_adapter(self, request: AdapterLoadRequest) -> ModelCard:
        if request.path is not None:
            source = self._path_under_root(request.path)
        else:
            try:
                source = resolve_adapter_source(request.name, request.tag)
            except ValueError as exc:
                raise NotFound(str(exc), param="tag", code="adapter_not_in_store") from None
        self.engine.add_adapter(request.name, source)
        self.failed.pop(request.name, None)
        metrics.declare_adapter(request.name, self.settings.model_path)
        logger.info("adapter %s loaded at run time", request.name)
        return ModelCard(id=request.name, root=self.settings.model_path,
                         parent=self.settings.served_model_name)

    def remove_adapter(self, name: str) -> None:
        self.rollout.guard_unload(name)
        self.engine.remove_adapter(name)
        metrics.retire_adapter(name, self.settings.model_path)
        logger.info("adapter %s unloaded at run time", name)

    def _path_under_root(self, path: str) -> str:
        """Resolve a client-given path inside adapter_root; `..`, absolute paths and symlinks
        that lead outside the root are refused."""
        root = self.settings.adapter_root
        if root is None:
            raise Forbidden("loading adapters by path is disabled: set CROSSGUARD_ADAPTER_ROOT",
                            param="path", code="adapter_root_unset")
        if Path(path).is_absolute():
            raise BadRequest("path must be relative to the adapter root", param="path",
                             code="path_outside_root")
        real_root = root.resolve()
        try:
            resolved = (real_root / path).resolve()
        except (OSError, ValueError, UnicodeError):
            raise BadRequest("path is not a usable file name", param="path",
                             code="invalid_adapter") from None
        if not resolved.is_relative_to(real_root):
            raise BadRequest("path leads outside the adapter root", param="path",
                             code="path_outside_root")
        return str(resolved)
