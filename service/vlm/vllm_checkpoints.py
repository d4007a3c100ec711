"""Checkpoints and adapters as vLLM loads them, converted once per checkpoint and cached.

Two conversions, both exact, both only where needed (hub checkpoints such as LLaVA-1.5 need
neither):

- **Names.** transformers 5 saves a LLaVA's CLIP tower as `vision_tower.*`; vLLM expects
  `vision_tower.vision_model.*`.
- **Head size.** vLLM's CPU attention serves head sizes of at least `MIN_HEAD_DIM` (32); the demo
  model's heads have 16 dimensions. Each attention head is widened with zero dimensions so that
  every attention score stays what it was: with rotary embeddings in the rotate-half layout,
  dimension `i` of a head of size `d` turns at frequency `theta^(-2i/d)`, which is the frequency of
  dimension `i * D/d` in a head of size `D`, so the query and key rows move there (the rest are
  zero and stay zero under rotation); queries are scaled by `sqrt(D/d)`, which undoes the change of
  the `1/sqrt(head_dim)` softmax scale; values and the output projection's columns take the first
  `d` of `D` places. LoRA adapters on the same projections get the same row and column moves
  (their `lora_B` rows for q/k/v, their `lora_A` columns for o), so an adapter's delta is the
  delta of the widened layer.

Each converted folder is named by a hash of what it was made from, written beside the cache and
renamed into place, so workers starting together never read a half-written copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from service.vlm.folders import ADAPTER_WEIGHTS

logger = logging.getLogger(__name__)

MODEL_WEIGHTS = "model.safetensors"
VISION, VISION_VLLM = "vision_tower.", "vision_tower.vision_model."
MIN_HEAD_DIM = 32
"""The smallest head size vLLM 0.32's CPU attention serves."""
TEXT_MODULES = ("language_model", "text_model")
"""Weight names of the language model contain one of these (the vision tower's do not)."""


@dataclass(frozen=True)
class HeadPadding:
    """Widen every language-model attention head from `old` to `new` dimensions."""

    old: int
    new: int

    @property
    def ratio(self) -> int:
        return self.new // self.old

    def rotary_rows(self) -> list[int]:
        """Where each of a query/key head's `old` rows goes in the widened head."""
        half = self.old // 2
        return [i * self.ratio for i in range(half)] + \
            [self.new // 2 + i * self.ratio for i in range(half)]

    def widen(self, tensor, rows: list[int], axis: int, scale: float = 1.0):
        """`tensor` with each head's `old` entries along `axis` moved to `rows` of `new`."""
        import torch

        moved = tensor.movedim(axis, 0)
        heads = moved.shape[0] // self.old
        grouped = moved.reshape(heads, self.old, *moved.shape[1:])
        out = torch.zeros(heads, self.new, *moved.shape[1:], dtype=tensor.dtype)
        out[:, rows] = grouped * scale
        return out.reshape(heads * self.new, *moved.shape[1:]).movedim(0, axis).contiguous()

    def convert(self, name: str, tensor, lora: str | None = None):
        """The widened tensor for weight `name` (`lora`: "lora_A"/"lora_B" of an adapter)."""
        if not any(m in name for m in TEXT_MODULES) or ".self_attn." not in name:
            return tensor
        projection = name.split(".self_attn.")[1].split(".")[0]
        first = list(range(self.old))
        if projection in ("q_proj", "k_proj") and lora != "lora_A":
            scale = math.sqrt(self.ratio) if projection == "q_proj" else 1.0
            return self.widen(tensor, self.rotary_rows(), 0, scale)
        if projection == "v_proj" and lora != "lora_A":
            return self.widen(tensor, first, 0)
        if projection == "o_proj" and lora != "lora_B":
            return self.widen(tensor, first, 1)
        return tensor


def head_padding(config: dict) -> HeadPadding | None:
    """The widening a model's config calls for, None when its heads are wide enough."""
    text = config.get("text_config", config)
    heads = text.get("num_attention_heads")
    head_dim = text.get("head_dim") or (text["hidden_size"] // heads if heads else None)
    if not head_dim or head_dim >= MIN_HEAD_DIM:
        return None
    if MIN_HEAD_DIM % head_dim or head_dim % 2:
        raise ValueError(f"head size {head_dim} cannot be widened to {MIN_HEAD_DIM} exactly")
    if (text.get("rope_parameters") or {}).get("rope_type", "default") != "default" \
            or text.get("partial_rotary_factor") not in (None, 1.0):
        raise ValueError("only plain rotary embeddings can be widened exactly")
    return HeadPadding(head_dim, MIN_HEAD_DIM)


def vllm_checkpoint(model_dir: str | Path, cache: Path) -> Path:
    """The folder vLLM loads: `model_dir` itself when it needs neither conversion, else its
    converted copy under `cache`."""
    source = Path(model_dir)
    weights = source / MODEL_WEIGHTS
    if not weights.is_file():
        return source  # sharded or hub layouts: vLLM's own loader maps them
    config = json.loads((source / "config.json").read_text())
    padding = head_padding(config)
    names = _names(weights)
    renames = any(n.startswith(VISION) and not n.startswith(VISION_VLLM) for n in names)
    if padding is None and not renames:
        return source

    def write(staging: Path) -> None:
        from safetensors import safe_open
        from safetensors.torch import save_file

        with safe_open(str(weights), "pt") as f:
            tensors = {_vllm_name(n): (padding.convert(n, f.get_tensor(n)) if padding
                                       else f.get_tensor(n)) for n in names}
        save_file(tensors, str(staging / MODEL_WEIGHTS), metadata={"format": "pt"})
        if padding:
            text = config.get("text_config", config)
            text["head_dim"] = padding.new
            (staging / "config.json").write_text(json.dumps(config, indent=2))
        _link_rest(source, staging, {MODEL_WEIGHTS, "config.json" if padding else ""})

    return _cached(cache, source, [names, padding and padding.new], write)


def vllm_adapter(adapter_dir: str | Path, model_dir: str | Path, cache: Path) -> Path:
    """The adapter folder vLLM loads for `model_dir`: as it is, or widened like the model."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    padding = head_padding(config)
    source = Path(adapter_dir)
    if padding is None:
        return source

    def write(staging: Path) -> None:
        from safetensors import safe_open
        from safetensors.torch import save_file

        with safe_open(str(source / ADAPTER_WEIGHTS), "pt") as f:
            tensors = {n: padding.convert(n, f.get_tensor(n), _lora_part(n)) for n in f.keys()}
        save_file(tensors, str(staging / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        _link_rest(source, staging, {ADAPTER_WEIGHTS})

    return _cached(cache, source, [_names(source / ADAPTER_WEIGHTS), padding.new], write)


def _lora_part(name: str) -> str | None:
    return next((part for part in ("lora_A", "lora_B") if f".{part}." in name), None)


def _vllm_name(name: str) -> str:
    if name.startswith(VISION) and not name.startswith(VISION_VLLM):
        return VISION_VLLM + name[len(VISION):]
    return name


def _names(weights: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        return list(f.keys())


def _link_rest(source: Path, staging: Path, skip: set[str]) -> None:
    """Every other file of `source` into `staging`: hard links where the disk allows."""
    for item in source.iterdir():
        if item.is_file() and item.name not in skip:
            try:
                os.link(item, staging / item.name)
            except OSError:
                shutil.copy2(item, staging / item.name)


def _cached(cache: Path, source: Path, made_from: list, write: Callable[[Path], None]) -> Path:
    """`cache/<name>-<key>`, written by `write` into a staging folder and renamed into place
    unless a copy of the same key is there already."""
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in source.iterdir()
                   if p.is_file())
    key = hashlib.sha256(json.dumps([str(source.resolve()), files, made_from],
                                    default=str).encode()).hexdigest()[:12]
    target = cache / f"{source.name}-{key}"
    if target.is_dir():
        return target
    staging = cache / f".{target.name}.{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        write(staging)
        staging.rename(target)
        logger.info("converted for vLLM: %s -> %s", source, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not target.is_dir():  # not another worker's rename winning the race
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
