"""OpenAI-compatible request and response models (shape follows vLLM's OpenAI protocol module).

Fields keep OpenAI's order and names so that the unmodified `openai` client works; fields that
OpenAI lacks carry a description. Limits that do not depend on settings live here, in the types.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageURL(_Model):
    url: str = Field(description="`data:image/...;base64,...` or an allowed http(s) URL.")
    detail: Literal["auto", "low", "high"] | None = None


class TextContentPart(_Model):
    type: Literal["text"]
    text: str


class ImageContentPart(_Model):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextContentPart | ImageContentPart, Field(discriminator="type")]


class ChatMessage(_Model):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]
    name: str | None = None


class StreamOptions(_Model):
    include_usage: bool = False


UNSUPPORTED_PARAMETERS: dict[str, tuple] = {
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "parallel_tool_calls": (None,),
    "response_format": (None, {"type": "text"}),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "web_search_options": (None,),
    "reasoning_effort": (None,),
    "store": (None, False),
    "metadata": (None,),
    "service_tier": (None, "auto", "default"),
}
"""OpenAI parameters this server cannot honour, with the values that ask for nothing (those are
accepted). Any other value is answered with 400 naming the parameter."""

_logger = logging.getLogger(__name__)
_ignored_fields: set[str] = set()


class ChatCompletionRequest(BaseModel):
    """POST /v1/chat/completions. Fields OpenAI does not define are ignored and logged once per
    name, as vLLM does; OpenAI's own fields are honoured or refused (`UNSUPPORTED_PARAMETERS`)."""

    model_config = ConfigDict(extra="ignore")

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    model: str | None = Field(
        default=None,
        description="`base` (or the base model id) for no adapter, else an adapter name; "
        "omitted means the configured default adapter.",
    )
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = Field(
        default=None, description="Token id (as a string) -> bias added to its logit."
    )
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Omitted: up to the context the prompt leaves, at most "
        "CROSSGUARD_DEFAULT_MAX_TOKENS (as vLLM)."
    )
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    min_tokens: Annotated[int, Field(ge=0)] = Field(
        default=0, description="vLLM extension: generate at least this many tokens (eos is "
        "suppressed until then); used by benchmarks to fix the output length."
    )
    n: Annotated[int, Field(ge=1, description="Choices, decoded as rows of one batch "
                                              "(at most CROSSGUARD_MAX_BATCH_SIZE).")] = 1
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = Field(
        default=None, description="Omitted means the model's own generation config (as vLLM)."
    )
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = Field(
        default=None, description="0 means greedy decoding, the limit of nucleus sampling."
    )
    user: str | None = Field(default=None, description="Written to the audit log when on.")
    unsupported: dict[str, object] = Field(default_factory=dict, exclude=True, description=(
        "OpenAI parameters given with a value this server cannot honour (filled by the "
        "validator; the conversion answers 400 naming the first)."))

    @model_validator(mode="before")
    @classmethod
    def _sort_fields(cls, data):
        if not isinstance(data, dict):
            return data
        data = dict(data)
        asked = {k: data.pop(k) for k in list(data) if k in UNSUPPORTED_PARAMETERS}
        data["unsupported"] = {k: v for k, v in asked.items()
                               if v not in UNSUPPORTED_PARAMETERS[k]}
        for name in data.keys() - cls.model_fields.keys():
            if name not in _ignored_fields:
                _ignored_fields.add(name)
                _logger.warning("ignoring request field %r: not an OpenAI chat parameter", name)
        return data

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        items = [value] if isinstance(value, str) else value or []
        if any(not s for s in items):
            raise ValueError("stop sequences must be non-empty")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key in value or {}:
            if not key.isdigit():
                raise ValueError(f"logit_bias keys are token ids, got {key!r}")
        return value

    @model_validator(mode="after")
    def _top_logprobs_needs_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs=true")
        return self

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def _now() -> int:
    return int(time.time())


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob]


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length"]


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=_completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[Choice]
    usage: Usage


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=_now)
    owned_by: str = "crossguard"
    root: str = Field(description="The base model this entry runs on.")
    parent: str | None = Field(
        default=None, description="For an adapter: the served name of its base model."
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class AdapterLoadRequest(_Model):
    """POST /v1/adapters: load an adapter at run time (admin)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                               description="Name clients pass as `model`.")]
    path: Annotated[str, Field(pattern=r"^[^\x00]{1,1024}$")] | None = Field(
        default=None, description="Adapter folder relative to CROSSGUARD_ADAPTER_ROOT."
    )
    tag: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,128}(:[A-Za-z0-9_.-]{1,128})?$")] | None \
        = Field(default=None, description="BentoML model-store tag, `name` or `name:version`.")

    @model_validator(mode="after")
    def _one_source(self) -> AdapterLoadRequest:
        if (self.path is None) == (self.tag is None):
            raise ValueError("give exactly one of path or tag")
        return self


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


class CanaryRequest(_Model):
    """POST /v1/rollout/canary: send a share of the requests naming no model to a candidate."""

    candidate: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                                    description="A loaded adapter (not the base).")]
    percent: Annotated[float, Field(ge=0.01, le=100, description="Share of un-named requests "
                                    "(0.01 to 100), sticky per client (`user` or "
                                    "`X-Crossguard-Client`).")]
