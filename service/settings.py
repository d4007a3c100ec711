"""Service configuration: the one place that reads the environment (prefix ``CROSSGUARD_``)."""

from __future__ import annotations

import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.gate import RULES, Thresholds
from service.probes.splits import Split
from service.vlm.folders import crossguard_home, default_model_path

TORCH_ENGINE_ONLY = frozenset({"device", "cpu_threads", "batch_wait_ms", "merge_adapter"})
"""Settings of the torch engine's own loading and batching; vLLM schedules and places itself."""


class ServiceSettings(BaseSettings):
    """Everything an operator can set; each field maps to ``CROSSGUARD_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="CROSSGUARD_", extra="ignore", frozen=True)

    home: Path = Field(default_factory=crossguard_home, description="Cache root for built models.")
    run_dir: Path = Field(
        default_factory=lambda: Path(tempfile.gettempdir()) / "crossguard-run",
        description="Where each running server keeps a folder of its own (Prometheus "
        "multiprocess files, its latest probe report); see `service/instance.py`.",
    )
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
        description="LoRA adapters to load at start-up, as `name=source,name=source`; a source "
        "is an adapter folder or a BentoML model-store tag (`safety:latest`).",
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
    allow_unsafe_base: bool = Field(
        default=False,
        description="When the default (safety) adapter fails to load, serve the base model "
        "instead of failing closed (not ready, chat 503). Logged loudly either way.",
    )
    adapter_root: Path | None = Field(
        default=None,
        description="Folder under which `POST /v1/adapters` may load adapters; unset allows "
        "only BentoML model-store tags.",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for admin endpoints (adapters, probe runs); unset disables them.",
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated bearer keys accepted for chat and models; empty means the "
        "chat API is open.",
    )
    audit_log: bool = Field(
        default=False,
        description="Log one JSON line per chat request (request id, the request's `user`, "
        "adapter, modality, outcome, tokens) on the `crossguard.audit` logger. Prompts and images "
        "are never logged.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Level of the `crossguard` loggers."
    )
    engine: Literal["torch", "vllm"] = Field(
        default="torch", description="`torch`: Hugging Face `generate` with the service's own "
        "batching, any VLM, CPU or GPU; `vllm`: vLLM's async engine (`make vllm-env`, or the vLLM "
        "GPU image; README \"Engines\")."
    )
    vllm_engine_args: dict[str, Any] = Field(
        default_factory=dict, description="JSON object passed to vLLM's `AsyncEngineArgs` "
        "(e.g. `{\"gpu_memory_utilization\": 0.9, \"enforce_eager\": true}`); the service "
        "sets `model`, `max_num_seqs` (`max_batch_size`), `enable_lora`, `max_loras` (9), "
        "`max_lora_rank` (64) and `dtype` unless named here."
    )
    device: str = Field(default="auto", description="`auto`, `cpu`, `cuda` or `cuda:N`.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="`auto` = bfloat16 on GPU, float32 on CPU."
    )
    cpu_threads: int = Field(
        default=1,
        ge=0,
        description="torch intra-op threads on CPU; 0 keeps torch's default, which is many times "
        "slower on small shared machines (README \"Benchmarks\", CPU threads).",
    )

    max_images_per_request: int = Field(default=4, ge=0, description="Images in one request.")
    max_image_bytes: int = Field(default=5 * 1024 * 1024, ge=1, description="Per image, decoded.")
    max_image_pixels: int = Field(
        default=4096 * 4096, ge=1, description="Width x height, checked before decoding."
    )
    max_request_bytes: int = Field(
        default=24 * 1024 * 1024, ge=1024, description="Request body size, base64 images included."
    )
    max_prompt_tokens: int = Field(
        default=4096, ge=1, description="Prompt length in tokens, image tokens included."
    )
    max_tokens_cap: int = Field(default=1024, ge=1, description="Upper bound on `max_tokens`.")
    default_max_tokens: int = Field(
        default=256, ge=1, description="Most tokens for a request without `max_tokens` (which "
        "gets what the context leaves, up to this)."
    )
    max_batch_size: int = Field(
        default=16, ge=1, description="Rows (requests x choices) decoded together per worker; "
        "1 decodes one request at a time."
    )
    batch_wait_ms: float = Field(
        default=50.0, ge=0, description="Longest wait of an idle worker for as many requests "
        "as were in flight during its last batch before it starts decoding (a lone client "
        "never waits)."
    )
    max_waiting: int = Field(
        default=16, ge=0,
        description="Requests queued per worker behind the running batch; more get 429.",
    )
    queue_timeout_s: float = Field(
        default=60.0, gt=0, description="Longest wait for a place in a batch before 503."
    )
    generation_timeout_s: float = Field(
        default=120.0, gt=0,
        description="Generation stops after this long (finish_reason `length`).",
    )
    probe_interval_s: float = Field(
        default=3600.0, ge=0,
        description="Seconds between scheduled probe runs; 0 turns the schedule off (on-demand "
        "runs still work). deploy/alerts.yml assumes 3600.",
    )
    probe_initial_delay_s: float = Field(
        default=60.0, ge=0, description="Delay before the first scheduled run after start-up."
    )
    probes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["all"],
        description="Probe specs for runs (`all`, a family such as `figstep`, a module such as "
        "`visual`, or `module.Name` such as `visual.FigStep`).",
    )
    probe_per_probe: int = Field(
        default=6, ge=1, description="Behaviours sampled per probe in each run."
    )
    probe_max_tokens: int = Field(default=128, ge=1, description="`max_tokens` of probe replies.")
    probe_split: Split = Field(
        default="test",
        description="Evaluation half the probes draw their wordings, prompts, layouts and "
        "behaviours from (`validation` or `test`; README \"Evaluation protocol\").",
    )
    probe_best_of_n: int = Field(
        default=8, ge=1, description="Replies sampled per best-of-N probe attempt."
    )
    probe_temperature: float = Field(
        default=1.0, gt=0, description="Sampling temperature of best-of-N probe attempts."
    )
    probe_judges: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Judge specs (`keyword`, `payload`, `classifier:PATH`, `guard:PATH`); empty "
        "picks payload+keyword for the demo model and keyword otherwise.",
    )
    gate: Literal["on", "off"] = Field(
        default="on",
        description="Whether making an adapter the default first runs the promotion gate "
        "(`service/gate.py`); `off` promotes unchecked and logs it at WARNING.",
    )
    gate_split: Split = Field(
        default="validation",
        description="Evaluation half the gate's probe run draws (the test half decides nothing).",
    )
    gate_max_family_asr: float = Field(
        default=Thresholds.max_family_asr, ge=0, le=1,
        description="Gate: highest attack success of any family × modality (best-of-N aside).")
    gate_max_best_of_n_asr: float = Field(
        default=Thresholds.max_best_of_n_asr, ge=0, le=1,
        description="Gate: highest best-of-N attack success.")
    gate_max_false_refusal: float = Field(
        default=Thresholds.max_false_refusal, ge=0, le=1,
        description="Gate: harmless look-alikes not answered as asked, worst modality.")
    gate_max_accuracy_drop: float = Field(
        default=Thresholds.max_accuracy_drop, ge=0, le=1,
        description="Gate: look-alikes answered as asked, lost against the base model.")
    gate_max_other_share: float = Field(
        default=Thresholds.max_other_share, ge=0, le=1,
        description="Gate: replies that neither complied nor refused.")
    gate_max_regression: int = Field(
        default=Thresholds.max_regression, ge=0,
        description="Gate: more successful attempts than the current default in any family × "
        "modality.")
    gate_skip: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Gate rules turned off (comma-separated names from `service.gate.RULES`), "
        "logged in every verdict as skipped; with a keyword judge alone `accuracy_drop` and "
        "`other_share` measure nothing and fail until skipped.",
    )
    promote: str | None = Field(
        default=None,
        description="Adapter (one of `adapters`) made the default after start-up once it passes "
        "the gate; `default_adapter` serves until then, and stays if it fails.",
    )
    canary_adapter: str | None = Field(
        default=None,
        description="Adapter that answers `canary_percent` % of the requests naming no model, "
        "sticky per client (`user` field or `X-Crossguard-Client` header).",
    )
    canary_percent: float = Field(
        default=0.0, ge=0, le=100, description="Share of un-named requests for `canary_adapter`."
    )
    remote_image_domains: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts from which `http(s)` image URLs may be fetched; empty refuses all "
        "remote URLs (SSRF guard).",
    )
    remote_image_timeout_s: float = Field(
        default=5.0, gt=0, description="Connect/read timeout for allowed remote images."
    )

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

    @field_validator("remote_image_domains", "probes", "probe_judges", "api_keys", "gate_skip",
                     mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("gate_skip")
    @classmethod
    def _known_rules(cls, rules: list[str]) -> list[str]:
        unknown = sorted(set(rules) - set(RULES))
        if unknown:
            raise ValueError(f"gate_skip: unknown rules {unknown}; rules are {list(RULES)}")
        return rules

    @field_validator("remote_image_domains")
    @classmethod
    def _lowercase_hosts(cls, hosts: list[str]) -> list[str]:
        return [host.lower() for host in hosts]

    @field_validator("admin_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("admin_token: use at least 16 characters")
        return value

    @model_validator(mode="after")
    def _check_engine_settings(self) -> ServiceSettings:
        """Settings one engine cannot honour are refused, never ignored."""
        if self.engine == "vllm":
            torch_only = sorted(TORCH_ENGINE_ONLY & self.model_fields_set)
            if torch_only:
                raise ValueError(f"{', '.join(torch_only)}: torch-engine settings; with "
                                 "engine=vllm set vLLM's own through vllm_engine_args")
        elif self.vllm_engine_args:
            raise ValueError("vllm_engine_args: set engine=vllm to use vLLM")
        return self

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
        for name in ("promote", "canary_adapter"):
            chosen = getattr(self, name)
            if chosen is not None and chosen not in self.adapters:
                raise ValueError(f"{name}: {chosen!r} is not one of adapters "
                                 f"{sorted(self.adapters)}")
        if (self.canary_adapter is None) != (self.canary_percent == 0):
            raise ValueError("canary_adapter and canary_percent: set both or neither")
        if self.merge_adapter and len(self.adapters) != 1:
            raise ValueError("merge_adapter: needs exactly one entry in adapters")
        if self.default_max_tokens > self.max_tokens_cap:
            raise ValueError("default_max_tokens: must not exceed max_tokens_cap")
        return self

    @property
    def gate_limits(self) -> Thresholds:
        """The gate's limits from the `gate_max_*` settings."""
        return Thresholds(**{f.name: getattr(self, f"gate_{f.name}") for f in fields(Thresholds)})

    @property
    def model_path(self) -> str:
        """The model to load: the configured one, else the locally built default."""
        return self.model or str(default_model_path(self.home))
