"""The BentoML service: lifecycle and thin OpenAI-compatible routes over `service.vlm`."""

from __future__ import annotations

import logging

import bentoml
from fastapi.responses import JSONResponse, StreamingResponse

from service.http import build_openai_app
from service.schemas import (
    AssistantMessage,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ModelCard,
    ModelList,
    Usage,
)
from service.settings import ServiceSettings

logger = logging.getLogger("crossguard")
settings = ServiceSettings()
openai_app = build_openai_app(settings.max_request_bytes)


@bentoml.asgi_app(openai_app, path="/v1")
@bentoml.service(
    name="crossguard",
    resources={"gpu": 1},
    traffic={"timeout": 600},
    http={"port": 3000},
)
class CrossGuard:
    """OpenAI-compatible multimodal chat over a VLM with textual-unlearning LoRA adapters."""

    def __init__(self) -> None:
        from service.vlm.engine import VLMEngine
        from service.vlm.loading import configure_cpu_threads

        configure_cpu_threads(settings.cpu_threads)
        self.engine = VLMEngine.from_pretrained(
            settings.model_path,
            adapters=settings.adapters,
            device=settings.device,
            dtype=settings.dtype,
            merge=settings.merge_adapter,
            max_prompt_tokens=settings.max_prompt_tokens,
        )
        logger.info("serving %s with adapters %s", settings.model_path, self.engine.adapter_names)

    @openai_app.get("/models")
    def list_models(self) -> ModelList:
        base = settings.served_model_name
        cards = [] if self.engine.merged else [ModelCard(id=base, root=settings.model_path)]
        cards += [
            ModelCard(id=name, root=settings.model_path, parent=base)
            for name in self.engine.adapter_names
        ]
        return ModelList(data=cards)

    @openai_app.post("/chat/completions", response_model=ChatCompletionResponse)
    def chat_completions(self, request: ChatCompletionRequest):
        from service.conversion import resolve_adapter, to_messages, to_sampling_params
        from service.streaming import sse_events

        adapter, served_as = resolve_adapter(request.model, settings, settings.model_path)
        params = to_sampling_params(request, settings)
        messages = to_messages(request, settings)
        if request.stream:
            stream = self.engine.stream(messages, params, adapter)
            usage = bool(request.stream_options and request.stream_options.include_usage)
            return StreamingResponse(
                sse_events(stream, served_as, usage), media_type="text/event-stream"
            )
        out = self.engine.generate(messages, params, adapter)
        response = ChatCompletionResponse(
            model=served_as,
            choices=[Choice(message=AssistantMessage(content=out.text),
                            finish_reason=out.finish_reason)],
            usage=Usage(prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens,
                        total_tokens=out.prompt_tokens + out.completion_tokens),
        )
        return JSONResponse(response.model_dump())
