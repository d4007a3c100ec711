"""LoRA adapters: loading named peft adapters onto one base model and choosing one per call.

peft keeps the active adapter as global model state, so selection and generation must happen
under one lock (the engine holds it); this module only loads and describes adapters.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from service.errors import BadRequest

logger = logging.getLogger(__name__)

LANGUAGE_MODEL_TARGETS = (
    r".*(language_model|text_model).*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
)
"""LoRA target regex for the language model only: a plain `["q_proj", "v_proj"]` list would
also wrap the vision tower's attention (CLIP uses the same names), which textual unlearning
must leave untouched."""

METADATA_FILE = "crossguard.json"


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
            f"adapter {name!r}: {folder} has no adapter_config.json (not a peft adapter folder)",
            param="adapters",
            code="invalid_adapter",
        )
    config = json.loads(config_file.read_text())
    meta_file = folder / METADATA_FILE
    metadata = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    return AdapterInfo(
        name=name,
        path=str(folder),
        base_model=config.get("base_model_name_or_path"),
        rank=config.get("r"),
        metadata=metadata,
    )


def attach_adapters(model, adapters: Mapping[str, str | Path]):
    """Load every adapter onto `model`; returns `(peft_model_or_model, {name: AdapterInfo})`.

    With no adapters the model is returned unwrapped, so serving the base alone pays nothing.
    """
    from peft import PeftModel

    infos = {name: read_adapter(name, path) for name, path in adapters.items()}
    for info in infos.values():
        if isinstance(model, PeftModel):
            model.load_adapter(info.path, adapter_name=info.name, is_trainable=False)
        else:
            model = PeftModel.from_pretrained(
                model, info.path, adapter_name=info.name, is_trainable=False
            )
        logger.info("loaded adapter %s from %s (r=%s)", info.name, info.path, info.rank)
    return model, infos
