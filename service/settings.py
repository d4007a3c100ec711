"""Service configuration: the one place that reads the environment (prefix ``CROSSGUARD_``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def default_home() -> Path:
    """Cache root for built models and adapters: ``CROSSGUARD_HOME``, else ``~/.cache/crossguard``.

    A function rather than a settings field read so that offline tools (model builders) agree
    with the service on where the default model lives without loading all service settings.
    """
    return Path(os.environ.get("CROSSGUARD_HOME", "~/.cache/crossguard")).expanduser()


class ServiceSettings(BaseSettings):
    """Everything an operator can set; each field maps to ``CROSSGUARD_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="CROSSGUARD_", extra="ignore", frozen=True)

    home: Path = Field(default_factory=default_home, description="Cache root for built models.")
    model: str = Field(
        default="",
        description="Hugging Face id or local folder of the VLM. Empty means the locally built "
        "default model at `$CROSSGUARD_HOME/models/default` (what `make serve` builds).",
    )
    served_model_name: str = Field(
        default="base", description="Name under which the model without adapter is served."
    )
    adapters: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="LoRA adapters to load at start-up, as `name=path,name=path`.",
    )
    default_adapter: str | None = Field(
        default=None,
        description="Adapter used when a request omits `model`; unset means the base model.",
    )
    merge_adapter: bool = Field(
        default=False,
        description="Merge the single configured adapter into the weights (faster; the base "
        "model is then no longer servable).",
    )
    device: str = Field(default="auto", description="`auto`, `cpu`, `cuda` or `cuda:N`.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="`auto` = bfloat16 on GPU, float32 on CPU."
    )
    cpu_threads: int = Field(
        default=1,
        ge=0,
        description="torch intra-op threads on CPU; 0 keeps torch's default. One thread was "
        "~40x faster than the default on 2 shared cores (see README, bench/).",
    )

    max_images_per_request: int = Field(default=4, ge=0)
    max_image_bytes: int = Field(default=5 * 1024 * 1024, ge=1, description="Per image, decoded.")
    max_image_pixels: int = Field(
        default=4096 * 4096, ge=1, description="Width x height, checked before decoding."
    )
    max_request_bytes: int = Field(default=24 * 1024 * 1024, ge=1024)
    max_prompt_tokens: int = Field(default=4096, ge=1)
    max_tokens_cap: int = Field(default=1024, ge=1, description="Upper bound on `max_tokens`.")
    default_max_tokens: int = Field(default=256, ge=1)
    remote_image_domains: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts from which `http(s)` image URLs may be fetched; empty refuses all "
        "remote URLs (SSRF guard).",
    )
    remote_image_timeout_s: float = Field(default=5.0, gt=0)

    @field_validator("adapters", mode="before")
    @classmethod
    def _parse_adapters(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs = [item.strip() for item in value.split(",") if item.strip()]
        parsed: dict[str, str] = {}
        for pair in pairs:
            name, sep, path = pair.partition("=")
            if not sep or not name.strip() or not path.strip():
                raise ValueError(f"adapters: expected name=path, got {pair!r}")
            parsed[name.strip()] = path.strip()
        return parsed

    @field_validator("remote_image_domains", mode="before")
    @classmethod
    def _parse_domains(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip().lower() for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _check_adapters(self) -> ServiceSettings:
        if self.served_model_name in self.adapters:
            raise ValueError(
                f"adapters: name {self.served_model_name!r} is reserved for the base model "
                "(served_model_name)"
            )
        if self.default_adapter is not None and self.default_adapter not in self.adapters:
            raise ValueError(
                f"default_adapter: {self.default_adapter!r} is not one of adapters "
                f"{sorted(self.adapters)}"
            )
        if self.merge_adapter and len(self.adapters) != 1:
            raise ValueError("merge_adapter: needs exactly one entry in adapters")
        if self.default_max_tokens > self.max_tokens_cap:
            raise ValueError("default_max_tokens: must not exceed max_tokens_cap")
        return self

    @property
    def model_path(self) -> str:
        """The model to load: the configured one, else the locally built default."""
        return self.model or str(self.home / "models" / "default")
