"""False-refusal direction ablation: a post-training weight edit of an unlearning adapter.

Wang et al. 2024 ("Surgical, Cheap, and Flexible: Mitigating False Refusal in Language Models
via Single Vector Ablation", arXiv 2410.03415), after Arditi et al. 2024 ("Refusal in Language
Models Is Mediated by a Single Direction", arXiv 2406.11717): the mean hidden state at the
position where the reply starts, over harmless requests that *look* harmful (look-alikes), minus
the mean over plainly harmless ones, is a false-refusal direction; orthogonalised against the
true refusal direction (harmful minus harmless means), it can be removed without removing
refusal. Removing a unit direction v from the residual stream for good is a weight edit of every
matrix that writes to it: W' = (I - v v^T) W.

Here W is the adapted weight W + s B A of each residual writer the adapter wraps (`o_proj`,
`down_proj`), so the edit is the rank-one term -v (v^T (W + s B A)) added to the adapter itself:
one more rank on those modules (peft's `rank_pattern`, with `alpha_pattern` keeping the scaling
s of the other ranks), the base model untouched. An adapter scoped to the reply (aLoRA) applies
the edit from its invocation on only, like the rest of its delta.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from service.vlm.folders import AdapterFolder
from unlearning.batching import messages_for
from unlearning.data import Example

logger = logging.getLogger(__name__)

WRITERS = ("o_proj", "down_proj")
"""Module names of the matrices that write into the residual stream (Llama, Mistral, Qwen)."""
DIRECTIONS_FILE = "ablation.safetensors"
"""The directions an edited adapter was ablated with (`refusal`, `false_refusal`), beside it."""


@dataclass(frozen=True)
class Directions:
    """The unit refusal direction r, the unit false-refusal direction v (orthogonal to r) and
    the layer (`hidden_states` index) they were read at."""

    refusal: torch.Tensor
    false_refusal: torch.Tensor
    layer: int


def mean_state(model, processor, examples: list[Example], layer: int) -> torch.Tensor:
    """Mean hidden state after `layer` at the last prompt position (where the reply starts)."""
    from service.vlm.prompts import encode

    total = None
    with torch.no_grad():
        for example in examples:
            inputs = encode(processor, messages_for(example, False, None)).to(model.device)
            state = model(**inputs, output_hidden_states=True).hidden_states[layer][0, -1]
            total = state.float() if total is None else total + state.float()
    return total / len(examples)


def directions(harmful: torch.Tensor, lookalike: torch.Tensor, harmless: torch.Tensor,
               layer: int) -> Directions:
    """r = unit(mu_harmful - mu_harmless); v = unit(f - (f . r) r), f = mu_lookalike -
    mu_harmless (Wang et al. 2024, eq. 3-4)."""
    refusal = harmful - harmless
    refusal = refusal / refusal.norm()
    false = lookalike - harmless
    false = false - (false @ refusal) * refusal
    return Directions(refusal, false / false.norm(), layer)


def edited_weights(peft_model, adapter: str, direction: torch.Tensor) -> dict[str, torch.Tensor]:
    """The adapter's weights with the rank-one ablation term appended to every residual writer:
    lora_A gains the row v^T W_eff, lora_B the column -v / s (W_eff = W + s B A)."""
    from peft.tuners.lora import LoraLayer

    edited = {}
    for name, module in peft_model.named_modules():
        if not isinstance(module, LoraLayer) or adapter not in module.lora_A:
            continue
        a = module.lora_A[adapter].weight.detach()
        b = module.lora_B[adapter].weight.detach()
        key = name.removeprefix("base_model.model.")
        if name.rsplit(".", 1)[-1] in WRITERS:
            scale = module.scaling[adapter]
            effective = module.get_base_layer().weight.detach() + scale * b @ a
            v = direction.to(effective.dtype)
            a = torch.cat([a, (v @ effective)[None]])
            b = torch.cat([b, -v[:, None] / scale], dim=1)
        edited[f"base_model.model.{key}.lora_A.weight"] = a.contiguous()
        edited[f"base_model.model.{key}.lora_B.weight"] = b.contiguous()
    return edited


def ablate(model_path: str, adapter: str | Path, out: str | Path, harmful: list[Example],
           lookalike: list[Example], harmless: list[Example], layer: int | None = None) -> Path:
    """Write to `out` a copy of `adapter` with its false-refusal direction ablated.

    Args:
        harmful, lookalike, harmless: requests whose mean states define the directions (their
            responses are not used): training data only, never an evaluation half's.
        layer: `hidden_states` index read (default: the middle of the decoder).
    """
    from peft import PeftModel
    from safetensors.torch import save_file

    from service.vlm.loading import load_vlm

    adapter, out = Path(adapter), Path(out)
    model, processor, _ = load_vlm(model_path, device="cpu", dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(model, str(adapter), adapter_name="default").eval()
    depth = model.config.get_text_config().num_hidden_layers
    layer = depth // 2 if layer is None else layer
    means = [mean_state(peft_model, processor, examples, layer)
             for examples in (harmful, lookalike, harmless)]
    found = directions(*means, layer)
    weights = edited_weights(peft_model, "default", found.false_refusal)
    config = AdapterFolder(adapter).config()
    rank, alpha = config["r"], config["lora_alpha"]
    config["rank_pattern"] = {**config.get("rank_pattern", {}),
                              **{writer: rank + 1 for writer in WRITERS}}
    config["alpha_pattern"] = {**config.get("alpha_pattern", {}),
                               **{writer: alpha * (rank + 1) / rank for writer in WRITERS}}
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(adapter, out, ignore=shutil.ignore_patterns("checkpoints", "eval"))
    save_file(weights, str(AdapterFolder(out).weights_file), metadata={"format": "pt"})
    save_file({"refusal": found.refusal.contiguous(),
               "false_refusal": found.false_refusal.contiguous()}, str(out / DIRECTIONS_FILE))
    AdapterFolder(out).config_file.write_text(json.dumps(config, indent=2) + "\n")
    metadata = AdapterFolder(adapter).metadata()
    metadata.pop("evaluations", None)
    metadata["ablation"] = {
        "method": "false-refusal direction (Wang et al. 2024)", "layer": layer,
        "writers": list(WRITERS), "examples": {"harmful": len(harmful),
                                               "lookalike": len(lookalike),
                                               "harmless": len(harmless)},
        "cosine_false_refusal_refusal_before": float(
            torch.nn.functional.cosine_similarity(means[1] - means[2], found.refusal, dim=0))}
    AdapterFolder(out).write_metadata(metadata)
    logger.info("false-refusal direction (layer %d) ablated from %s into %s", layer, adapter, out)
    return out
