"""LoRA adapters: describing, validating, loading and unloading named peft adapters.

peft keeps the active adapter as global model state and serves mixed batches by name, so which
adapter a row uses is the engine's business (`service.vlm.batching`); this module only knows
about adapters. An adapter is checked
against the served base model *before* it touches it (a failed peft load can leave half-made
LoRA layers behind): readable weights, rank as declared, every target module present with the
shapes the weights expect, and, where the adapter records one, the same base-model fingerprint.

An adapter may be *scoped to the reply*: peft's Activated LoRA (Greenewald et al. 2025, "Activated
LoRA: Fine-tuned LLMs for Intrinsics", arXiv 2504.12397; `alora_invocation_tokens` in its
`adapter_config.json`) applies the LoRA delta only from the last occurrence of its invocation
tokens on, here the chat template's generation prompt, so every prompt state (text and image
tokens, earlier turns) is exactly the base model's. Serving one takes the per-row offsets that
`activation_offsets` computes; a scoped adapter whose tokens are not this model's generation
prompt is refused, since it would never (or wrongly) switch on.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from service.errors import BadRequest, Unprocessable
from service.vlm.folders import AdapterFolder, NotAnAdapter
from service.vlm.prompts import generation_prompt_ids

logger = logging.getLogger(__name__)

LANGUAGE_MODEL_TARGETS = (
    r".*(language_model|text_model).*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
)
"""LoRA target regex for the language model only: a plain `["q_proj", "v_proj"]` list would
also wrap the vision tower's attention (CLIP uses the same names), which textual unlearning
must leave untouched."""

@dataclass(frozen=True)
class AdapterInfo:
    name: str
    path: str
    base_model: str | None
    rank: int | None
    metadata: dict = field(default_factory=dict, compare=False)
    activation: tuple[int, ...] | None = None
    """Invocation token ids of an adapter scoped to the reply (aLoRA), None for plain LoRA."""
    rank_pattern: dict = field(default_factory=dict, compare=False)
    """peft's per-module ranks (module-name regex -> rank) where they differ from `rank`."""

    def rank_of(self, module: str) -> int | None:
        """The rank of the adapter on `module`, as peft resolves `rank_pattern`."""
        from peft.utils.other import get_pattern_key

        key = get_pattern_key(list(self.rank_pattern), module)
        return self.rank_pattern.get(key, self.rank)

    @property
    def scope(self) -> str:
        """`assistant` for an adapter scoped to the reply, `all` for one on every position."""
        return "all" if self.activation is None else "assistant"


def read_adapter(name: str, path: str | Path) -> AdapterInfo:
    """Describe an adapter folder, failing with a clear message when it is not one."""
    folder = AdapterFolder(path)
    try:
        config = folder.config()
        metadata = folder.metadata()
    except NotAnAdapter as exc:
        error = BadRequest if exc.missing else Unprocessable
        raise error(f"adapter {name!r}: {exc}", param="path", code="invalid_adapter") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise Unprocessable(f"adapter {name!r}: unreadable config ({exc})",
                            param="path", code="invalid_adapter") from None
    activation = config.get("alora_invocation_tokens")
    return AdapterInfo(name, str(folder.path), config.get("base_model_name_or_path"),
                       config.get("r"), metadata, tuple(activation) if activation else None,
                       config.get("rank_pattern") or {})


def base_fingerprint(model) -> str:
    """A short hash of the base model's input embeddings: tells two checkpoints of the same
    architecture apart, which shape checks cannot. Unlearning records it in crossguard.json."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    weight = base.get_input_embeddings().weight.detach().float().cpu().flatten()[:65536]
    return hashlib.sha256(weight.numpy().tobytes()).hexdigest()[:16]


def validate_adapter(model, info: AdapterInfo, processor=None) -> None:
    """Refuse (422) an adapter that does not fit `model`, without modifying the model; a scoped
    adapter (aLoRA) also when its invocation tokens are not the ids `processor`'s chat template
    opens the reply with."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    def refuse(reason: str):
        return Unprocessable(f"adapter {info.name!r}: {reason}", param="path",
                             code="adapter_mismatch")

    try:
        weights = load_file(str(AdapterFolder(info.path).weights_file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise refuse(f"weights are missing, truncated or corrupt ({exc})") from None
    if info.activation is not None and processor is not None:
        try:
            opening = generation_prompt_ids(processor)
        except ValueError as exc:
            raise refuse(f"scoped to the reply, but {exc}") from None
        if list(info.activation) != opening:
            raise refuse(f"scoped to the reply by tokens {list(info.activation)}, but this "
                         f"model's chat template opens the reply with {opening}: it would never "
                         "switch on")
    recorded = info.metadata.get("base_fingerprint")
    if recorded and recorded != base_fingerprint(model):
        raise refuse("trained on a different base model (base_fingerprint differs)")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for key, tensor in weights.items():
        module_name, kind = _split_lora_key(key)
        if kind is None:
            continue
        try:
            module = base.get_submodule(module_name)
        except AttributeError:
            raise refuse(f"targets {module_name}, which this base model lacks") from None
        layer = getattr(module, "base_layer", module)
        rank = info.rank_of(module_name)
        expected = ((rank, layer.in_features) if kind == "lora_A"
                    else (layer.out_features, rank))
        if tuple(tensor.shape) != expected:
            raise refuse(f"{key} has shape {tuple(tensor.shape)}, expected {expected} "
                         f"for rank {rank} on this base model")


def _split_lora_key(key: str) -> tuple[str, str | None]:
    """`base_model.model.<module>.lora_A.weight` -> (`<module>`, "lora_A")."""
    for kind in ("lora_A", "lora_B"):
        marker = f".{kind}."
        if marker in key:
            return key.split(marker)[0].removeprefix("base_model.model."), kind
    return key, None


def load_adapter(model, info: AdapterInfo, processor=None):
    """Validate (a scoped adapter against `processor`'s chat template), then load one adapter;
    returns the (possibly newly wrapped) peft model."""
    from peft import PeftModel

    validate_adapter(model, info, processor)
    if isinstance(model, PeftModel):
        model.load_adapter(info.path, adapter_name=info.name, is_trainable=False)
    else:
        model = PeftModel.from_pretrained(model, info.path, adapter_name=info.name,
                                          is_trainable=False)
    logger.info("loaded adapter %s from %s (r=%s, scope %s)", info.name, info.path, info.rank,
                info.scope)
    return model


def unload_adapter(model, name: str):
    """Remove one adapter; the last one out unwraps the base model so it serves at full speed."""
    if len(model.peft_config) == 1:
        return model.unload()
    model.delete_adapter(name)
    return model


def attach_adapters(model, adapters: Mapping[str, str | Path], processor=None):
    """Load every adapter onto `model`; returns `(model, {name: AdapterInfo})`.

    With no adapters the model is returned unwrapped, so serving the base alone pays nothing.
    """
    infos = {name: read_adapter(name, path) for name, path in adapters.items()}
    for info in infos.values():
        model = load_adapter(model, info, processor)
    return model, infos


def activation_offsets(model, input_ids, adapters: list[str | None]) -> list[int | None] | None:
    """Per row of a batch, how many of its last positions a scoped adapter (aLoRA) acts on,
    counted from the end (peft's `alora_offsets`): from its invocation tokens on. None when no
    row uses a scoped adapter, so plain batches pass nothing.

    peft's causal-LM wrapper computes them itself, but a plain `PeftModel` (an adapter saved
    without a task type, or a scoped one loaded after it) does not, and a scoped adapter without
    offsets acts nowhere, silently: the engine always passes them.

    Args:
        adapters: each row's adapter name, None for the base model.
    """
    from peft.tuners.lora.variants import calculate_alora_offsets

    configs = getattr(model, "peft_config", {})
    if not any(name is not None and getattr(configs.get(name), "alora_invocation_tokens", None)
               for name in adapters):
        return None
    names = [name if name is not None else "__base__" for name in adapters]
    return calculate_alora_offsets(configs, model.active_adapter, input_ids, adapter_names=names)
