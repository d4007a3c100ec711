"""LoRA adapters: describing, validating, loading and unloading named peft adapters.

peft keeps the active adapter as global model state and serves mixed batches by name, so which
adapter a row uses is the engine's business (`service.vlm.batching`); this module only knows
about adapters. An adapter is checked
against the served base model *before* it touches it (a failed peft load can leave half-made
LoRA layers behind): readable weights, rank as declared, every target module present with the
shapes the weights expect, and, where the adapter records one, the same base-model fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from service.errors import BadRequest, Unprocessable
from service.vlm.folders import read_adapter_metadata

logger = logging.getLogger(__name__)

LANGUAGE_MODEL_TARGETS = (
    r".*(language_model|text_model).*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
)
"""LoRA target regex for the language model only: a plain `["q_proj", "v_proj"]` list would
also wrap the vision tower's attention (CLIP uses the same names), which textual unlearning
must leave untouched."""

WEIGHTS_FILE = "adapter_model.safetensors"


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    path: str
    base_model: str | None
    rank: int | None
    metadata: dict = field(default_factory=dict, compare=False)


def read_adapter(name: str, path: str | Path) -> AdapterInfo:
    """Describe an adapter folder, failing with a clear message when it is not one."""
    folder = Path(path)
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise BadRequest(
            f"adapter {name!r}: {folder.name} has no adapter_config.json (not a peft adapter)",
            param="path", code="invalid_adapter",
        )
    try:
        config = json.loads(config_file.read_text())
        metadata = read_adapter_metadata(folder)
    except (OSError, json.JSONDecodeError) as exc:
        raise Unprocessable(f"adapter {name!r}: unreadable config ({exc})",
                            param="path", code="invalid_adapter") from None
    if config.get("peft_type") != "LORA":
        raise Unprocessable(f"adapter {name!r}: peft_type {config.get('peft_type')!r} is not "
                            "LORA", param="path", code="invalid_adapter")
    return AdapterInfo(name, str(folder), config.get("base_model_name_or_path"),
                       config.get("r"), metadata)


def base_fingerprint(model) -> str:
    """A short hash of the base model's input embeddings: tells two checkpoints of the same
    architecture apart, which shape checks cannot. Unlearning records it in crossguard.json."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    weight = base.get_input_embeddings().weight.detach().float().cpu().flatten()[:65536]
    return hashlib.sha256(weight.numpy().tobytes()).hexdigest()[:16]


def validate_adapter(model, info: AdapterInfo) -> None:
    """Refuse (422) an adapter that does not fit `model`, without modifying the model."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    def refuse(reason: str):
        return Unprocessable(f"adapter {info.name!r}: {reason}", param="path",
                             code="adapter_mismatch")

    try:
        weights = load_file(str(Path(info.path) / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise refuse(f"weights are missing, truncated or corrupt ({exc})") from None
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
        expected = ((info.rank, layer.in_features) if kind == "lora_A"
                    else (layer.out_features, info.rank))
        if tuple(tensor.shape) != expected:
            raise refuse(f"{key} has shape {tuple(tensor.shape)}, expected {expected} "
                         f"for rank {info.rank} on this base model")


def _split_lora_key(key: str) -> tuple[str, str | None]:
    """`base_model.model.<module>.lora_A.weight` -> (`<module>`, "lora_A")."""
    for kind in ("lora_A", "lora_B"):
        marker = f".{kind}."
        if marker in key:
            return key.split(marker)[0].removeprefix("base_model.model."), kind
    return key, None


def load_adapter(model, info: AdapterInfo):
    """Validate, then load one adapter; returns the (possibly newly wrapped) peft model."""
    from peft import PeftModel

    validate_adapter(model, info)
    if isinstance(model, PeftModel):
        model.load_adapter(info.path, adapter_name=info.name, is_trainable=False)
    else:
        model = PeftModel.from_pretrained(model, info.path, adapter_name=info.name,
                                          is_trainable=False)
    logger.info("loaded adapter %s from %s (r=%s)", info.name, info.path, info.rank)
    return model


def unload_adapter(model, name: str):
    """Remove one adapter; the last one out unwraps the base model so it serves at full speed."""
    if len(model.peft_config) == 1:
        return model.unload()
    model.delete_adapter(name)
    return model


def attach_adapters(model, adapters: Mapping[str, str | Path]):
    """Load every adapter onto `model`; returns `(model, {name: AdapterInfo})`.

    With no adapters the model is returned unwrapped, so serving the base alone pays nothing.
    """
    infos = {name: read_adapter(name, path) for name, path in adapters.items()}
    for info in infos.values():
        model = load_adapter(model, info)
    return model, infos
