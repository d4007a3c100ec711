"""OpenAI-compatible request and response models (shape follows vLLM's OpenAI protocol module).

Fields keep OpenAI's order and names so that the unmodified `openai` client works; fields that
OpenAI lacks carry a description. Limits that do not depend on settings live here, in the types.
"""

from __future__ import annotations

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


class ChatCompletionRequest(BaseModel):
    """POST /v1/chat/completions. Unknown OpenAI fields are ignored, as vLLM does."""

    model_config = ConfigDict(extra="ignore")

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    model: str | None = Field(
        default=None,
        description="`base` (or the base model id) for no adapter, else an adapter name; "
        "omitted means the configured default adapter.",
    )
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    min_tokens: Annotated[int, Field(ge=0)] = Field(
        default=0, description="vLLM extension: generate at least this many tokens (eos is "
        "suppressed until then); used by benchmarks to fix the output length."
    )
    n: Annotated[int, Field(ge=1, le=1, description="Only one choice is generated.")] = 1
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
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        items = [value] if isinstance(value, str) else value or []
        if any(not s for s in items):
            raise ValueError("stop sequences must be non-empty")
        return value

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


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
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
    logprobs: None = None
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
