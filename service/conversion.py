"""From an OpenAI chat request to what the engine takes (messages, sampling params, adapter),
and from the engine's log-probabilities back to OpenAI's shape."""

from __future__ import annotations

from service.errors import BadRequest
from service.images import ImageLimits, load_image
from service.schemas import (
    ChatCompletionRequest,
    ChoiceLogprobs,
    ImageContentPart,
    TokenLogprob,
    Usage,
)
from service.settings import ServiceSettings
from service.vlm.messages import ImagePart, Message, TextPart
from service.vlm.protocol import SamplingParams


def image_limits(settings: ServiceSettings) -> ImageLimits:
    return ImageLimits(
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        remote_domains=tuple(settings.remote_image_domains),
        remote_timeout_s=settings.remote_image_timeout_s,
    )


def to_messages(request: ChatCompletionRequest, settings: ServiceSettings) -> list[Message]:
    """Decode every image part, enforcing the per-request image count before any decoding."""
    image_parts = [
        (i, j)
        for i, m in enumerate(request.messages)
        if not isinstance(m.content, str)
        for j, p in enumerate(m.content)
        if isinstance(p, ImageContentPart)
    ]
    if len(image_parts) > settings.max_images_per_request:
        raise BadRequest(
            f"{len(image_parts)} images in the request; the limit is "
            f"{settings.max_images_per_request}",
            param="messages",
            code="too_many_images",
        )
    limits = image_limits(settings)
    messages = []
    for i, m in enumerate(request.messages):
        if isinstance(m.content, str):
            messages.append(Message(m.role, (TextPart(m.content),)))
            continue
        parts = []
        for j, p in enumerate(m.content):
            if isinstance(p, ImageContentPart):
                param = f"messages[{i}].content[{j}].image_url"
                parts.append(ImagePart(load_image(p.image_url.url, limits, param)))
            else:
                parts.append(TextPart(p.text))
        messages.append(Message(m.role, tuple(parts)))
    return messages


def to_sampling_params(request: ChatCompletionRequest, settings: ServiceSettings) -> SamplingParams:
    """Check the request's decoding parameters against this server's limits (400 naming the
    parameter) and turn them into engine settings."""
    if request.unsupported:
        name, value = next(iter(request.unsupported.items()))
        raise BadRequest(f"parameter {name!r} is not supported by this server (got "
                         f"{str(value)[:80]})", param=name, code="unsupported_parameter")
    max_tokens = request.requested_max_tokens
    if max_tokens is not None and max_tokens > settings.max_tokens_cap:
        raise BadRequest(
            f"max_tokens is {max_tokens}; this server allows at most {settings.max_tokens_cap}",
            param="max_tokens",
            code="max_tokens_exceeded",
        )
    most = max_tokens or settings.default_max_tokens
    if request.min_tokens > most:
        raise BadRequest(
            f"min_tokens ({request.min_tokens}) exceeds max_tokens ({most})",
            param="min_tokens",
            code="invalid_request",
        )
    if request.n > settings.max_batch_size:
        raise BadRequest(f"n is {request.n}; this server decodes at most "
                         f"{settings.max_batch_size} choices at once", param="n",
                         code="invalid_request")
    if request.stream_options is not None and not request.stream:
        raise BadRequest("stream_options needs stream=true", param="stream_options",
                         code="invalid_request")
    greedy = request.top_p == 0.0
    return SamplingParams(
        max_tokens=max_tokens,
        min_tokens=request.min_tokens,
        temperature=0.0 if greedy else request.temperature,
        top_p=None if greedy else request.top_p,
        stop=request.stop_sequences,
        seed=request.seed,
        n=request.n,
        logprobs=(request.top_logprobs or 0) if request.logprobs else None,
        logit_bias={int(k): v for k, v in (request.logit_bias or {}).items()},
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        deltas=request.stream,
    )


def resolve_adapter(
    model: str, settings: ServiceSettings, base_model_id: str
) -> tuple[str | None, str]:
    """Map a request's named `model` to `(adapter or None for base, name to echo back)`; a
    request naming none is routed by `service.rollout` (the default may have been promoted)."""
    if model in (settings.served_model_name, base_model_id):
        return None, model
    return model, model


def to_logprobs(entries) -> ChoiceLogprobs | None:
    """The engine's token log-probabilities in OpenAI's shape (None when not asked for)."""
    if entries is None:
        return None

    def top(token: str, logprob: float) -> dict:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    return ChoiceLogprobs(content=[
        TokenLogprob(**top(e.token, e.logprob), top_logprobs=[top(*t) for t in e.top])
        for e in entries
    ])


def to_usage(choices) -> Usage:
    """Usage of a request's choices (each with `prompt_tokens`, `completion_tokens`): the
    prompt counts once, as OpenAI counts it for `n` > 1."""
    prompt = choices[0].prompt_tokens
    completion = sum(c.completion_tokens for c in choices)
    return Usage(prompt_tokens=prompt, completion_tokens=completion,
                 total_tokens=prompt + completion)
